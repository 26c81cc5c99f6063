// #/schedules: the clock's periodic jobs — how often, last and next run, how many runs — and
// "run now" (queued at once, or not while one is still waiting). Read again every few seconds.

import { actionButton, h, setText } from "./dom.js";
import * as format from "./format.js";

const REFRESH_MS = 5000;
const CELLS = [
  ["schedule-every", (s) => `every ${format.duration(s.everyS)}`],
  ["schedule-last", (s) => (s.lastRunAt ? `${format.ago(s.lastRunAt)} (${s.lastTrigger === "manual" ? `manual, ${s.lastBy}` : "clock"})` : "never")],
  ["schedule-next", (s) => (s.nextRunAt ? format.ago(s.nextRunAt) : "–")],
  ["schedule-runs", (s) => format.number(s.runs)],
];

export function mount(ctx, route, root) {
  let alive = true;
  const rows = new Map();
  const tbody = h("tbody");
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Schedules"),
      h("p", { class: "muted" }, "The clock sends each job periodically; “run now” sends it at once.")),
    h("table", { testid: "schedules-table", class: "data" },
      h("thead", {}, h("tr", {}, ["Job", "Queue", "Every", "Last run", "Next run", "Runs", ""].map((name) => h("th", {}, name)))),
      tbody));

  async function runNow(name) {
    try {
      const outcome = await ctx.api.post(`/admin/schedules/${encodeURIComponent(name)}/run`);
      if (outcome.queued) ctx.toast("ok", `${name} queued (job ${format.shortId(outcome.jobId)}).`);
      else ctx.toast("error", `${name} not queued: ${outcome.reason}.`);
    } catch (error) {
      ctx.fail(error);
    }
    await load();
  }

  function row(schedule) {
    let found = rows.get(schedule.name);
    if (!found) {
      const cells = CELLS.map(([testid]) => h("td", { testid }));
      const tr = h("tr", { testid: "schedule-row", dataset: { name: schedule.name } },
        h("td", {}, h("code", {}, schedule.name)), h("td", {}, schedule.queue), cells,
        h("td", { class: "actions" }, actionButton(ctx, { testid: "schedule-run", class: "secondary" }, "Run now",
          () => runNow(schedule.name))));
      found = { tr, cells };
      rows.set(schedule.name, found);
      tbody.append(tr);
    }
    CELLS.forEach(([, value], i) => setText(found.cells[i], value(schedule)));
    found.cells[2].title = schedule.nextRunAt || "";
    found.cells[1].title = schedule.lastRunAt || "";
  }

  async function load() {
    try {
      const body = await ctx.api.get("/admin/schedules");
      if (alive) body.items.forEach(row);
    } catch (error) {
      if (alive) ctx.fail(error);
    }
  }

  const timer = setInterval(load, REFRESH_MS);
  load();
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
