// #/failed/<id>: one failed job in full — its arguments and options as JSON, the traceback, every
// replay (and whether it failed again) — with replay, and force replay once it was replayed.

import { actionButton, fill, h } from "./dom.js";
import * as format from "./format.js";

function facts(job) {
  const rows = [
    ["Actor", h("code", { testid: "job-actor" }, job.actor)],
    ["Queue", h("span", { testid: "job-queue" }, job.queue)],
    ["Message", h("code", {}, job.messageId)],
    ["Failed", `${format.time(job.failedAt)} (${format.ago(job.failedAt)})`],
    ["Enqueued", format.time(job.enqueuedAt)],
    ["Attempts", String(job.attempts)],
    ["Source", job.source],
    ["Error", h("span", { class: "error-text" }, `${job.exceptionType}: ${job.exceptionMessage}`)],
  ];
  return h("dl", { class: "facts" }, rows.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function replaysTable(job) {
  const rows = job.replays.map((replay) => h("tr", { testid: "job-replay", dataset: { messageId: replay.messageId } },
    h("td", {}, format.time(replay.at)),
    h("td", {}, replay.by),
    h("td", {}, h("code", {}, replay.messageId)),
    h("td", {}, replay.forced ? "forced" : ""),
    h("td", {}, replay.failedAgainJobId
      ? h("a", { href: `#/failed/${encodeURIComponent(replay.failedAgainJobId)}` }, "failed again")
      : "no failure recorded")));
  return h("table", { testid: "job-replays", class: "data" },
    h("thead", {}, h("tr", {}, ["When", "By", "Message", "", "Outcome"].map((name) => h("th", {}, name)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "Never replayed."))));
}

export function mount(ctx, route, root) {
  let alive = true;
  const detail = h("section", { testid: "job-detail", class: "job-detail", dataset: { id: route.id } }, "Loading…");
  root.append(h("div", { class: "page-head" },
    h("a", { testid: "job-back", href: "#/failed", class: "back" }, "← Failed jobs"),
    h("h1", {}, "Failed job ", h("code", {}, format.shortId(route.id)))), detail);

  async function replay(job, force) {
    try {
      const outcome = await ctx.api.post(`/admin/jobs/failed/${encodeURIComponent(job.id)}/replay`, { force });
      if (outcome.replayed) ctx.toast("ok", `Replayed as message ${format.shortId(outcome.messageId)}.`);
      else ctx.toast("error", `Not replayed: ${outcome.skipped}.`);
    } catch (error) {
      ctx.fail(error);
    }
    await load();
  }

  function render(job) {
    const buttons = [actionButton(ctx, { testid: "job-replay" }, "Replay", () => replay(job, false))];
    if (job.replayCount > 0) {
      buttons.push(actionButton(ctx, { testid: "job-replay-force", class: "secondary" }, "Replay again (force)",
        () => replay(job, true)));
    }
    fill(detail,
      h("div", { class: "bulk" }, buttons,
        job.replayCount ? h("span", { class: "muted" }, ` replayed ${job.replayCount}× (last ${format.ago(job.replayedAt)})`) : null),
      facts(job),
      h("h2", {}, "Arguments"),
      h("pre", { testid: "job-args", class: "code" }, format.json({ args: job.args, kwargs: job.kwargs })),
      h("h2", {}, "Options"),
      h("pre", { testid: "job-options", class: "code" }, format.json(job.options)),
      h("h2", {}, "Traceback"),
      h("pre", { testid: "job-traceback", class: "code traceback" }, job.traceback || "No traceback was recorded."),
      h("h2", {}, "Replays"),
      replaysTable(job));
  }

  async function load() {
    try {
      const job = await ctx.api.get(`/admin/jobs/failed/${encodeURIComponent(route.id)}`);
      if (alive) render(job);
    } catch (error) {
      if (!alive) return;
      fill(detail, h("p", { class: "error-text" }, error.status === 404 ? "No failed job has this id." : ctx.describe(error)));
      if (error.status !== 404) ctx.fail(error);
    }
  }

  load();
  return () => {
    alive = false;
  };
}
