// The console's shell: sign-in, the session (full or read-only admin), the hash router, the live
// connection's state and the toast. Each page is a module with `mount(ctx, route, root)`, which
// returns the function that tears it down.

import * as api from "./api.js";
import { byTestId, h, setText } from "./dom.js";
import * as failed from "./failed.js";
import * as job from "./job.js";
import * as map from "./map.js";
import * as queues from "./queues.js";
import * as schedules from "./schedules.js";
import { LiveSocket } from "./socket.js";
import * as workers from "./workers.js";

const PAGES = { queues, failed, job, workers, schedules, map };
const TOAST_MS = 10000;

const loginView = document.getElementById("login-view");
const shell = document.getElementById("shell");
const pageRoot = document.getElementById("page");
const toastNode = byTestId(document, "toast");
const socket = new LiveSocket({ token: api.accessToken, refresh: api.refresh });

let session = null;
let unmount = null;
let toastTimer = null;

/** `#/failed/abc?x=1` → {page: "job", id: "abc", params: {x: "1"}, nav: "failed"}. */
export function parseRoute(hash) {
  const text = hash.replace(/^#\/?/, "");
  const mark = text.indexOf("?");
  const path = mark < 0 ? text : text.slice(0, mark);
  const params = Object.fromEntries(new URLSearchParams(mark < 0 ? "" : text.slice(mark + 1)));
  const parts = path.split("/").filter(Boolean).map((part) => decodeURIComponent(part));
  if (parts[0] === "failed" && parts[1]) return { page: "job", id: parts[1], params, nav: "failed" };
  if (parts[0] === "map") return { page: "map", region: (parts[1] || "").toUpperCase(), params, nav: "map" };
  if (parts[0] in PAGES && parts[0] !== "job") return { page: parts[0], params, nav: parts[0] };
  return { page: "queues", params, nav: "queues" };
}

function describe(error) {
  if (error instanceof api.ApiError) {
    if (error.reason === "READ_ONLY_ADMIN") return "Read-only admins can look but not act.";
    return error.message || error.code;
  }
  return error && error.message ? error.message : String(error);
}

function toast(kind, message) {
  toastNode.dataset.kind = kind;
  setText(toastNode, message);
  toastNode.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toastNode.hidden = true;
  }, TOAST_MS);
}

const ctx = {
  api,
  socket,
  get session() {
    return session;
  },
  toast,
  fail: (error) => toast("error", describe(error)),
  describe,
  navigate: (hash) => {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
};

function route() {
  if (!session) return;
  if (unmount) unmount();
  unmount = null;
  const current = parseRoute(location.hash);
  for (const link of document.querySelectorAll("[data-route]")) {
    if (link.dataset.route === current.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = h("div", { class: `page-${current.page}` });
  pageRoot.replaceChildren(root);
  unmount = PAGES[current.page].mount(ctx, current, root) || null;
}

function showLogin(note = "") {
  session = null;
  if (unmount) unmount();
  unmount = null;
  socket.stop();
  pageRoot.replaceChildren();
  shell.hidden = true;
  loginView.hidden = false;
  byTestId(loginView, "login-error").hidden = true;
  const noteNode = loginView.querySelector(".login-note");
  if (noteNode) noteNode.remove();
  if (note) byTestId(loginView, "login-form").append(h("p", { class: "login-note muted" }, note));
  byTestId(loginView, "login-email").focus();
}

function enter(user) {
  const readOnly = user.adminAccess === "read_only";
  session = { user, readOnly };
  setText(byTestId(shell, "whoami"), user.email);
  const badge = byTestId(shell, "role-badge");
  setText(badge, readOnly ? "read-only" : "full");
  badge.dataset.access = readOnly ? "read-only" : "full";
  badge.title = readOnly ? "Read-only admin: every action is disabled." : "Full admin access.";
  loginView.hidden = true;
  shell.hidden = false;
  socket.start();
  if (!location.hash) history.replaceState(null, "", "#/queues");
  route();
}

function refusalOf(user) {
  if (user.role !== "admin") return `This console is for admins only; ${user.email} is a ${user.role}.`;
  return "";
}

async function submitLogin(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = byTestId(form, "login-error");
  const button = byTestId(form, "login-submit");
  error.hidden = true;
  button.disabled = true;
  try {
    const user = await api.login(byTestId(form, "login-email").value.trim(),
      byTestId(form, "login-password").value, refusalOf);
    byTestId(form, "login-password").value = "";
    enter(user);
  } catch (failure) {
    const tooMany = failure instanceof api.ApiError && failure.status === 429;
    setText(error, tooMany ? "Too many attempts: wait a moment and try again." : describe(failure));
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function resume() {
  if (!api.hasSession()) {
    showLogin();
    return;
  }
  try {
    const user = await api.get("/me");
    if (refusalOf(user)) {
      await api.logout();
      showLogin();
    } else {
      enter(user);
    }
  } catch (failure) {
    showLogin(api.hasSession() ? describe(failure) : "");
  }
}

function liveStatus(state) {
  const node = byTestId(shell, "live-status");
  node.dataset.state = state;
  setText(node, state);
  node.title = { live: "Live updates on", connecting: "Connecting…", offline: "Live updates off" }[state];
}

byTestId(loginView, "login-form").addEventListener("submit", submitLogin);
byTestId(shell, "logout").addEventListener("click", async () => {
  await api.logout();
  showLogin();
});
api.onSignedOut(() => showLogin("Your session ended: sign in again."));
socket.onState(liveStatus);
window.addEventListener("hashchange", route);
resume();
