// A ride's timeline on the live map: the status moves seen live (`map:ride`) merged with the
// ride's recorded history (`GET /rides/{id}`).

import { fill, h } from "./dom.js";
import * as format from "./format.js";

const SAME_MOVE_MS = 5000;

/** Recorded moves, plus each move seen live that the history does not (yet) hold; oldest first. */
export function mergeTimeline(history, seen) {
  const entries = (history || []).map((move) => ({
    status: move.to, at: move.at, by: move.by ? move.by.role : "", reason: move.reason || "", source: "recorded",
  }));
  for (const event of seen) {
    const known = entries.some((entry) => entry.status === event.status
      && Math.abs(Date.parse(entry.at) - Date.parse(event.at)) < SAME_MOVE_MS);
    if (!known) entries.push({ status: event.status, at: event.at, by: "", reason: "", source: "live" });
  }
  return entries.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

/** Fill `panel` with the ride's facts and timeline (`ride` may be null while it loads or if refused). */
export function drawTimeline(panel, { rideId, ride, seen, error, onClose }) {
  const entries = mergeTimeline(ride ? ride.history : [], seen);
  const close = h("button", { type: "button", class: "link", "aria-label": "Close" }, "×");
  close.addEventListener("click", onClose);
  const status = ride ? ride.status : (seen.length ? seen[seen.length - 1].status : "…");
  fill(panel,
    h("div", { class: "panel-head" }, h("h2", {}, "Ride ", h("code", {}, format.shortId(rideId))), close),
    h("p", {}, h("span", { class: "badge" }, status),
      ride ? ` ${ride.vehicleType} · ${ride.paymentMethod} · ${ride.distanceKm} km` : ""),
    ride ? h("p", { class: "muted small" }, `driver ${ride.driverId ? format.shortId(ride.driverId) : "none yet"} · `
      + `customer ${format.shortId(ride.customerId)}`) : null,
    error ? h("p", { class: "error-text" }, error) : null,
    h("ol", { class: "timeline" }, entries.map((entry) => h("li", { testid: "timeline-entry", dataset: { status: entry.status, source: entry.source } },
      h("strong", {}, entry.status), " ", h("time", { datetime: entry.at, title: entry.at }, format.time(entry.at)),
      entry.by ? h("span", { class: "muted" }, ` by ${entry.by}`) : null,
      entry.reason ? h("span", { class: "muted" }, ` — ${entry.reason}`) : null,
      entry.source === "live" ? h("span", { class: "badge small" }, "live") : null))));
  panel.hidden = false;
}
