// #/workers: every live worker process (host, pid, queues, threads, jobs in progress, heartbeat)
// and the autoscaler's last decisions; live from `ops:snapshot`.

import { fill, h, setText } from "./dom.js";
import * as format from "./format.js";
import { followOps } from "./ops.js";

const WORKER_CELLS = [
  ["worker-host", "Host", (w) => w.host],
  ["worker-pid", "PID", (w) => String(w.pid)],
  ["worker-queues", "Queues", (w) => w.queues.join(", ")],
  ["worker-threads", "Threads", (w) => String(w.threads)],
  ["worker-inprogress", "In progress", (w) => String(w.inProgress)],
  ["worker-heartbeat", "Heartbeat", (w) => `${format.duration(w.lastBeatAgeS)} ago`],
];

export function mount(ctx, route, root) {
  let alive = true;
  const rows = new Map();
  const workerBody = h("tbody");
  const decisionBody = h("tbody");
  const summary = h("span", { class: "muted" });
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Workers"), h("p", {}, summary)),
    h("table", { testid: "workers-table", class: "data" },
      h("thead", {}, h("tr", {}, WORKER_CELLS.map(([, name]) => h("th", {}, name)), h("th", {}, "Started"))), workerBody),
    h("h2", {}, "Autoscaler decisions"),
    h("table", { testid: "autoscaler-table", class: "data" },
      h("thead", {}, h("tr", {}, ["When", "Pool", "Action", "Workers", "Reason"].map((name) => h("th", {}, name)))),
      decisionBody));

  function workerRow(worker) {
    let row = rows.get(worker.id);
    if (!row) {
      const cells = WORKER_CELLS.map(([testid]) => h("td", { testid }));
      row = { tr: h("tr", { testid: "worker-row", dataset: { id: worker.id } }, cells, h("td", {})), cells };
      rows.set(worker.id, row);
    }
    WORKER_CELLS.forEach(([, , value], i) => setText(row.cells[i], value(worker)));
    setText(row.tr.lastChild, format.ago(worker.startedAt));
    row.tr.dataset.alive = String(worker.alive);
    return row.tr;
  }

  function render(body) {
    if (!alive || !body) return;
    const seen = new Set(body.items.map((worker) => worker.id));
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    const trs = body.items.map(workerRow);
    workerBody.replaceChildren(...(trs.length ? trs : [h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No worker is alive."))]));
    const threads = format.sum(body.items.map((worker) => worker.threads));
    const busy = format.sum(body.items.map((worker) => worker.inProgress));
    setText(summary, `${body.items.length} processes · ${threads} threads · ${busy} jobs in progress · updated ${format.time(body.at)}`);
    fill(decisionBody, body.autoscaler.length
      ? body.autoscaler.map((decision) => h("tr", { testid: "autoscaler-row", dataset: { action: decision.action } },
        h("td", { title: decision.at }, format.time(decision.at)),
        h("td", {}, decision.queue || "–"),
        h("td", {}, h("span", { class: `badge ${decision.action === "add" ? "ok" : "warn"}` }, decision.action)),
        h("td", { class: "num" }, `${decision.from} → ${decision.to}`),
        h("td", {}, decision.reason)))
      : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No decision yet (workers may run without the autoscaler).")));
  }

  const stop = followOps(ctx, {
    onSnapshot: (snapshot) => render(snapshot.workers),
    load: () => ctx.api.get("/admin/workers").then(render).catch((error) => alive && ctx.fail(error)),
  });
  return () => {
    alive = false;
    stop();
  };
}
