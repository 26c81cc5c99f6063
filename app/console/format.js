// Ages, times and numbers as the console shows them.

const numberFormat = new Intl.NumberFormat("en");

export function number(value) {
  return value === null || value === undefined ? "–" : numberFormat.format(value);
}

/** A duration in seconds, short: "0.4 s", "12 s", "3 min", "2 h 5 min", "3 d". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 10) return `${Math.round(s * 10) / 10} s`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) {
    const minutes = Math.round((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h${minutes ? ` ${minutes} min` : ""}`;
  }
  return `${Math.round(s / 86400)} d`;
}

/** How long ago an RFC 3339 time was: "3 min ago" (or "in 3 min" for a future one). */
export function ago(iso, now = Date.now()) {
  if (!iso) return "–";
  const delta = (now - Date.parse(iso)) / 1000;
  if (Number.isNaN(delta)) return "–";
  return delta >= 0 ? `${duration(delta)} ago` : `in ${duration(-delta)}`;
}

/** A time in the browser's zone: "14:03:22" today, "4 Dec 14:03" otherwise. */
export function time(iso) {
  if (!iso) return "–";
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "–";
  const today = new Date().toDateString() === when.toDateString();
  return today
    ? when.toLocaleTimeString("en-GB", { hour12: false })
    : when.toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

export function percent(rate) {
  if (rate === null || rate === undefined) return "–";
  return `${(Math.round(rate * 1000) / 10).toFixed(1)} %`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function sum(values) {
  return (values || []).reduce((total, value) => total + value, 0);
}

export function shortId(id) {
  return String(id || "").slice(0, 8);
}
