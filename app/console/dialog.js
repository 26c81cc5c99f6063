// Modal dialogs (a native <dialog>): confirm an action, or ask for a value before it.

import { h } from "./dom.js";

/**
 * Open a modal dialog; resolves true when `ok` is pressed, false when cancelled (button, Escape).
 * `body` is a list of nodes; the caller keeps references to any inputs it put there.
 */
export function openDialog({ testid, title, body = [], okLabel = "OK", okTestId, cancelTestId, danger = false }) {
  return new Promise((resolve) => {
    let settled = false;
    const ok = h("button", { type: "button", testid: okTestId, class: danger ? "danger" : "" }, okLabel);
    const cancel = h("button", { type: "button", testid: cancelTestId, class: "secondary" }, "Cancel");
    const dialog = h("dialog", { testid, class: "dialog", "aria-label": title },
      h("h2", {}, title), h("div", { class: "dialog-body" }, body), h("div", { class: "dialog-actions" }, cancel, ok));
    const finish = (answer) => {
      if (settled) return;
      settled = true;
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(answer);
    };
    ok.addEventListener("click", () => finish(true));
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target instanceof HTMLInputElement && event.target.type !== "checkbox") {
        event.preventDefault();
        finish(true);
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    (body.find?.((node) => node instanceof HTMLElement && node.querySelector("input"))?.querySelector("input") || ok)
      .focus();
  });
}
