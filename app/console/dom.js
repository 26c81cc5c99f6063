// Tiny element helpers. Text always goes in as text nodes or textContent, never as markup, so
// nothing the API returns can become HTML (the console never assigns innerHTML).

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "testid") node.setAttribute("data-testid", value);
    else if (name === "class") node.setAttribute("class", value);
    else if (name === "dataset") Object.entries(value).forEach(([k, v]) => { node.dataset[k] = String(v); });
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("td", {testid: "queue-ready"}, 12). */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  apply(node, attrs);
  append(node, children);
  return node;
}

/** An SVG element: svg("circle", {cx: 1, cy: 2, r: 3}). */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, attrs);
  append(node, children);
  return node;
}

/** Replace every child of `node` with `children`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Set an element's text if it changed (keeps the DOM quiet on live updates). */
export function setText(node, value) {
  const text = String(value ?? "");
  if (node.textContent !== text) node.textContent = text;
}

export function byTestId(root, id) {
  return root.querySelector(`[data-testid="${id}"]`);
}

export const READ_ONLY_TITLE = "Read-only admin: you can look, not act. Ask an operator for full access.";

/** A button that changes something: disabled, with a title saying why, for a read-only admin. */
export function actionButton(ctx, attrs, label, onClick) {
  const button = h("button", { type: "button", ...attrs }, label);
  if (ctx.session.readOnly) {
    button.disabled = true;
    button.title = READ_ONLY_TITLE;
  } else {
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      try {
        await onClick(event);
      } finally {
        if (button.isConnected) button.disabled = false;
      }
    });
  }
  return button;
}

/** A labelled form field. */
export function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}
