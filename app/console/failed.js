// #/failed: the failed-jobs registry with filters kept in the hash query (a filtered view is a
// link), the count matching, paging, replay one, and replay or purge everything matching after a
// confirmation that shows the preview count and sends it as `expect`.

import { openDialog } from "./dialog.js";
import { actionButton, field, h, setText } from "./dom.js";
import * as format from "./format.js";

// [filter (the hash query's and the API's name), label, placeholder, its input's test id]
const TEXT_FILTERS = [
  ["actor", "Actor", "payments.capture", "filter-actor"],
  ["queue", "Queue", "notifications", "filter-queue"],
  ["error", "Error", "text in the exception", "filter-error"],
  ["args", "Arguments contain", 'ride-42 or {"ride_id": "…"}', "filter-args"],
  ["since", "Since", "2h, 7d or 2026-12-04T09:00Z", "filter-since"],
  ["until", "Until", "1h (ago) or a date-time", "filter-until"],
];
const PAGE_SIZE = 50;
const COUNT_EVERY_MS = 10000;

/** The hash query's filters → the API's query (`replayed=false` unless replayed jobs are included). */
export function apiQuery(params) {
  const query = {};
  for (const [name] of TEXT_FILTERS) if (params[name]) query[name] = params[name];
  if (params.replayed !== "all") query.replayed = "false";
  return query;
}

/** The same filters as the body of `/failed/replay` and `/failed/purge`. */
export function bodyFilters(params) {
  const filters = {};
  for (const [name] of TEXT_FILTERS) if (params[name]) filters[name] = params[name];
  if (params.replayed !== "all") filters.replayed = false;
  return filters;
}

function filterForm(ctx, params) {
  const inputs = Object.fromEntries(TEXT_FILTERS.map(([name, , placeholder, testid]) => [name,
    h("input", { testid, name, type: "text", value: params[name] || "", placeholder,
      list: name === "queue" ? "known-queues" : null })]));
  const include = h("input", { testid: "filter-include-replayed", type: "checkbox", name: "replayed" });
  include.checked = params.replayed === "all";
  const form = h("form", { testid: "failed-filters", class: "filters" },
    TEXT_FILTERS.map(([name, label]) => field(label, inputs[name])),
    h("label", { class: "check" }, include, " include jobs already replayed"),
    h("button", { testid: "filter-apply", type: "submit" }, "Apply"),
    h("datalist", { id: "known-queues" }, ["dispatch", "payments", "notifications", "maintenance"]
      .map((queue) => h("option", { value: queue }))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name] of TEXT_FILTERS) if (inputs[name].value.trim()) query.set(name, inputs[name].value.trim());
    if (include.checked) query.set("replayed", "all");
    const text = query.toString();
    ctx.navigate(`#/failed${text ? `?${text}` : ""}`);
  });
  return form;
}

function failedRow(ctx, job, replay) {
  const error = `${job.exceptionType}: ${job.exceptionMessage}`;
  return h("tr", { testid: "failed-row", dataset: { id: job.id, actor: job.actor, replayed: job.replayCount > 0 } },
    h("td", { title: job.failedAt }, format.time(job.failedAt), h("div", { class: "muted small" }, format.ago(job.failedAt))),
    h("td", {}, job.queue),
    h("td", {}, h("code", {}, job.actor)),
    h("td", { class: "num" }, job.attempts),
    h("td", { class: "error-text", title: error }, error.length > 140 ? `${error.slice(0, 140)}…` : error),
    h("td", { class: "num" }, job.replayCount ? `${job.replayCount}×` : "–"),
    h("td", { class: "actions" },
      h("a", { testid: "failed-open", href: `#/failed/${encodeURIComponent(job.id)}` }, "Open"),
      actionButton(ctx, { testid: "failed-replay", class: "secondary" }, "Replay", () => replay(job))));
}

export function mount(ctx, route, root) {
  const params = route.params;
  const query = apiQuery(params);
  let alive = true;
  let cursor = null;
  let shown = null;
  const count = h("strong", { testid: "failed-count" }, "…");
  const tbody = h("tbody");
  const more = h("button", { testid: "failed-more", type: "button", class: "secondary", hidden: true }, "Load more");
  const changed = h("button", { type: "button", class: "link", hidden: true }, "New failures: reload");
  const bulk = h("div", { class: "bulk" },
    actionButton(ctx, { testid: "replay-matching" }, "Replay all matching…", () => matching("replay")),
    actionButton(ctx, { testid: "purge-matching", class: "danger" }, "Purge all matching…", () => matching("purge")));
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Failed jobs"),
    h("p", {}, count, " matching ", changed)), filterForm(ctx, params), bulk,
  h("table", { testid: "failed-table", class: "data" }, h("thead", {}, h("tr", {},
    ["Failed", "Queue", "Actor", "Tries", "Error", "Replayed", ""].map((name) => h("th", {}, name)))), tbody),
  more);

  function showCount(value) {
    setText(count, format.number(value));
    count.dataset.count = String(value);
  }

  async function refreshCount() {
    const { count: value } = await ctx.api.get("/admin/jobs/failed/count", query);
    if (!alive) return value;
    if (shown !== null && value !== shown) changed.hidden = false;
    showCount(value);
    return value;
  }

  async function loadPage(first) {
    try {
      const page = await ctx.api.get("/admin/jobs/failed", { ...query, limit: PAGE_SIZE, cursor: first ? null : cursor });
      if (!alive) return;
      if (first) tbody.replaceChildren();
      tbody.append(...page.items.map((job) => failedRow(ctx, job, replay)));
      if (!tbody.children.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No failed job matches.")));
      cursor = page.nextCursor;
      more.hidden = !cursor;
    } catch (error) {
      if (alive) ctx.fail(error);
    }
  }

  async function reload() {
    changed.hidden = true;
    shown = null;
    await Promise.all([loadPage(true), refreshCount().then((value) => { shown = value; }).catch(ctx.fail)]);
  }

  async function replay(job) {
    try {
      const outcome = await ctx.api.post(`/admin/jobs/failed/${encodeURIComponent(job.id)}/replay`, {});
      if (outcome.replayed) ctx.toast("ok", `Replayed ${job.actor} as message ${format.shortId(outcome.messageId)}.`);
      else ctx.toast("error", `Not replayed: ${outcome.skipped}.`);
      await reload();
    } catch (error) {
      ctx.fail(error);
    }
  }

  async function matching(kind) {
    let expect;
    try {
      expect = await refreshCount();
    } catch (error) {
      ctx.fail(error);
      return;
    }
    if (!expect) {
      ctx.toast("error", "No failed job matches these filters.");
      return;
    }
    const force = h("input", { testid: "confirm-force", type: "checkbox" });
    const verb = kind === "replay" ? "Replay" : "Purge";
    const go = await openDialog({
      testid: "confirm-dialog", title: `${verb} every matching job?`, okLabel: verb, okTestId: "confirm-ok",
      cancelTestId: "confirm-cancel", danger: kind === "purge",
      body: [h("p", {}, h("strong", { testid: "confirm-count" }, String(expect)), " failed jobs match the filters",
        Object.keys(bodyFilters(params)).length ? `: ${JSON.stringify(bodyFilters(params))}` : " (all of them)", "."),
      kind === "replay" ? h("label", { class: "check" }, force, " also replay jobs replayed before (force)")
        : h("p", { class: "warn-text" }, "Purged jobs and their Redis dead letters are deleted for good.")],
    });
    if (!go) return;
    try {
      if (kind === "replay") {
        const done = await ctx.api.post("/admin/jobs/failed/replay", { filters: bodyFilters(params), expect, force: force.checked });
        ctx.toast("ok", `Replayed ${done.replayed}, skipped ${done.skipped}.`);
      } else {
        const done = await ctx.api.post("/admin/jobs/failed/purge", { filters: bodyFilters(params), expect });
        ctx.toast("ok", `Purged ${done.purged}.`);
      }
    } catch (error) {
      if (error.status === 409 && error.code === "CONFLICT") {
        const now = error.details && error.details.matching;
        ctx.toast("error", `The count changed${now === undefined ? "" : ` (${now} match now)`}: preview again.`);
      } else {
        ctx.fail(error);
      }
    }
    await reload();
  }

  more.addEventListener("click", () => loadPage(false));
  changed.addEventListener("click", reload);
  const timer = setInterval(() => refreshCount().catch(() => null), COUNT_EVERY_MS);
  reload();
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
