// Building the page: elements made with their text set as text (never parsed as HTML, so no
// task payload or error can inject markup), and the formats every page shares.

/** `h("a", {href: "#/"}, "Home")`: an element with attributes and children (text or nodes). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An SVG element, for charts and graphs. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces what `el` holds. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table with a caption (for screen readers and the eye), column headers and rows. */
export function table(caption, columns, rows, empty = "Nothing here yet.") {
  const body = rows.length
    ? rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty))];
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, body),
  );
}

export function stateBadge(state) {
  return h("span", { class: `badge s-${state}` }, state);
}

/** "3 min ago", "in 20 s", with the exact time on hover. */
export function ago(iso) {
  if (!iso) return "";
  const t = Date.parse(iso);
  const s = Math.round((Date.now() - t) / 1000);
  const abs = Math.abs(s);
  const text =
    abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min` : abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return h("time", { datetime: iso, title: iso }, s >= 0 ? `${text} ago` : `in ${text}`);
}

export function ms(n) {
  if (n === undefined || n === null) return "";
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
  if (n < 3600000) return `${(n / 60000).toFixed(1)} min`;
  return `${(n / 3600000).toFixed(1)} h`;
}

/**
 * An id shortened to its last 8 characters: ids are UUIDv7, whose first characters are the
 * time they were made, the same for every task of a minute; the end is random.
 */
export function shortId(id) {
  return id ? `…${id.slice(-8)}` : "";
}

/** A link to a task's page. */
export function taskLink(id) {
  return h("a", { href: `#/tasks/${id}`, class: "mono", title: id }, shortId(id));
}

/** Pretty JSON in a block, or a note that the token may not see it. */
export function jsonBlock(value, label) {
  if (value === undefined) return h("p", { class: "muted" }, `${label}: hidden from this token.`);
  return h("pre", { class: "json", tabindex: 0, "aria-label": label }, JSON.stringify(value, null, 2));
}

/** A message in the page's status area. */
export function notice(el, text, kind = "info") {
  fill(el, text ? h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text) : null);
}

/** A button that runs `action` once at a time, showing an error in `status` if it fails. */
export function actionButton(label, action, status, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
    } catch (e) {
      notice(status, e.message, "error");
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** Asks before something that cannot be undone, in an accessible dialog. Resolves true/false. */
export function confirmDialog(message, confirmLabel) {
  return new Promise((resolve) => {
    const d = h(
      "dialog",
      { "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, "Are you sure?"),
      h("p", {}, message),
    );
    const done = (yes) => {
      d.close();
      d.remove();
      resolve(yes);
    };
    d.append(
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "danger", onclick: () => done(true) }, confirmLabel),
        h("button", { type: "button", onclick: () => done(false) }, "Cancel"),
      ),
    );
    d.addEventListener("cancel", () => done(false));
    document.body.append(d);
    d.showModal();
  });
}
