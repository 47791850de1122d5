// Small DOM helpers: every node is built with textContent, never innerHTML, so nothing a
// tenant stored (a name, a field, an error) can become markup.
let ids = 0;
export const uid = (p = "f") => `${p}${++ids}`;

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A labelled control: returns [label, control] wrapped in a div.
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) parts.push(h("small", {}, hint));
  return h("div", { class: "field" }, parts);
}

export function select(options, value, attrs = {}) {
  return h("select", attrs, options.map((o) => {
    const [v, text] = Array.isArray(o) ? o : [o, o];
    const opt = h("option", { value: v }, text);
    if (String(v) === String(value)) opt.selected = true;
    return opt;
  }));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function table(columns, rows, cell) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {}, cell(r, c)))))));
}

export function status(text, kind = "info") {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = kind;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

// Parse a pasted list: a JSON array, or one JSON value per line.
export function parseList(text) {
  const t = text.trim();
  if (!t) return [];
  if (t.startsWith("[")) return JSON.parse(t);
  return t.split("\n").filter((l) => l.trim()).map((l, i) => {
    try { return JSON.parse(l); } catch (e) { throw new Error(`line ${i + 1}: ${e.message}`); }
  });
}
