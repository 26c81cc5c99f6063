// #/queues: one row per queue with its figures, the last hour's runs and failures per minute
// (a sparkline), pause (with a reason) and resume; live from `ops:snapshot`.

import { openDialog } from "./dialog.js";
import { actionButton, field, fill, h, setText, svg } from "./dom.js";
import * as format from "./format.js";
import { followOps } from "./ops.js";

const COLUMNS = ["Queue", "Ready", "Delayed", "In flight", "Dead", "Failed", "Oldest", "Runs (1 h)",
  "Failure rate", "Last hour", ""];
const CELLS = ["queue-ready", "queue-delayed", "queue-inflight", "queue-dead", "queue-failed",
  "queue-oldest", "queue-throughput", "queue-failure-rate"];
const SPARK_W = 120;
const SPARK_H = 28;

function line(values, max, cls) {
  const step = SPARK_W / Math.max(1, values.length - 1);
  const points = values.map((value, i) => `${(i * step).toFixed(1)},${(SPARK_H - 2 - (value / max) * (SPARK_H - 4)).toFixed(1)}`);
  return svg("polyline", { points: points.join(" "), class: cls });
}

/** The last hour's runs (blue) and failures (red), per minute, on one scale. */
export function drawSparkline(node, throughput, failures) {
  const max = Math.max(1, ...throughput, ...failures);
  fill(node, svg("title", {}, `runs ${format.sum(throughput)}, failures ${format.sum(failures)} in the last hour`),
    line(throughput, max, "spark-runs"), line(failures, max, "spark-failures"));
}

function cellValues(item) {
  return [format.number(item.ready), format.number(item.delayed), format.number(item.inFlight),
    format.number(item.dead), format.number(item.failed), format.duration(item.oldestAgeS),
    format.number(format.sum(item.throughput)), format.percent(item.failureRate)];
}

export function mount(ctx, route, root) {
  let alive = true;
  const rows = new Map();
  const workersAlive = h("strong", { testid: "workers-alive" }, "–");
  const updated = h("span", { class: "muted" }, "");
  const tbody = h("tbody");
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Queues"),
      h("p", {}, "Workers alive: ", workersAlive, " · ", updated)),
    h("table", { testid: "queues-table", class: "data" },
      h("thead", {}, h("tr", {}, COLUMNS.map((name) => h("th", {}, name)))), tbody));

  async function pause(queue) {
    const reason = h("input", { testid: "pause-reason", type: "text", maxlength: 500, placeholder: "e.g. Stripe incident" });
    const go = await openDialog({
      testid: "pause-dialog", title: `Pause ${queue}?`, okLabel: "Pause", okTestId: "pause-confirm",
      cancelTestId: "pause-cancel",
      body: [h("p", {}, "Workers take none of its jobs until it is resumed; nothing is lost, the jobs wait."),
        field("Reason", reason)],
    });
    if (!go) return;
    const text = reason.value.trim();
    try {
      update(await ctx.api.post(`/admin/queues/${encodeURIComponent(queue)}/pause`, text ? { reason: text } : {}));
      ctx.toast("ok", `Paused ${queue}.`);
    } catch (error) {
      ctx.fail(error);
    }
  }

  async function resume(queue) {
    try {
      update(await ctx.api.post(`/admin/queues/${encodeURIComponent(queue)}/resume`));
      ctx.toast("ok", `Resumed ${queue}.`);
    } catch (error) {
      ctx.fail(error);
    }
  }

  function createRow(queue) {
    const cells = Object.fromEntries(CELLS.map((id) => [id, h("td", { testid: id, class: "num" })]));
    const failedLink = h("a", { href: `#/failed?queue=${encodeURIComponent(queue)}` });
    cells["queue-failed"].append(failedLink);
    const row = {
      tr: h("tr", { testid: "queue-row", dataset: { queue } }), name: h("td", { class: "queue-name" }),
      cells, failedLink, spark: svg("svg", { testid: "queue-sparkline", class: "sparkline", viewBox: `0 0 ${SPARK_W} ${SPARK_H}`,
        width: SPARK_W, height: SPARK_H, role: "img" }),
      action: h("td", { class: "actions" }), paused: null,
    };
    row.tr.append(row.name, ...CELLS.map((id) => cells[id]), h("td", {}, row.spark), row.action);
    rows.set(queue, row);
    tbody.append(row.tr);
    return row;
  }

  function update(item) {
    if (!alive) return;
    const row = rows.get(item.queue) || createRow(item.queue);
    row.tr.dataset.paused = String(item.paused);
    const note = item.paused
      ? `paused ${format.ago(item.pausedAt)}${item.pausedBy ? ` by ${item.pausedBy}` : ""}${item.pauseReason ? `: ${item.pauseReason}` : ""}`
      : "";
    fill(row.name, h("strong", {}, item.queue), item.paused ? h("span", { class: "badge warn", title: note }, "paused") : null,
      note ? h("div", { class: "muted small" }, note) : null);
    cellValues(item).forEach((value, i) => {
      const cell = CELLS[i] === "queue-failed" ? row.failedLink : row.cells[CELLS[i]];
      setText(cell, value);
    });
    drawSparkline(row.spark, item.throughput || [], item.failures || []);
    if (row.paused !== item.paused) {
      row.paused = item.paused;
      fill(row.action, item.paused
        ? actionButton(ctx, { testid: "queue-resume" }, "Resume", () => resume(item.queue))
        : actionButton(ctx, { testid: "queue-pause", class: "secondary" }, "Pause…", () => pause(item.queue)));
    }
  }

  function render(body) {
    if (!alive || !body) return;
    setText(workersAlive, format.number(body.workersAlive));
    setText(updated, `updated ${format.time(body.at)}`);
    const seen = new Set(body.items.map((item) => item.queue));
    for (const [queue, row] of rows) {
      if (!seen.has(queue)) {
        row.tr.remove();
        rows.delete(queue);
      }
    }
    body.items.forEach(update);
  }

  const stop = followOps(ctx, {
    onSnapshot: (snapshot) => render(snapshot.queues),
    load: () => ctx.api.get("/admin/queues").then(render).catch((error) => alive && ctx.fail(error)),
  });
  return () => {
    alive = false;
    stop();
  };
}
