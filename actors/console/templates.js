// Templates: the list, and an editor of the three scripts (decode, validate, transform) with
// line numbers, run on sample payloads through the API (the `templates test` engine and
// limits), each stage's output or error shown with its line.
import { api, query } from "./api.js";
import { changeButton, showError } from "./app.js";
import { clear, field, h, json, parseList, status, table } from "./dom.js";

const STAGES = [["scriptProcessor", "decode", "Decode script (scriptProcessor)"],
  ["scriptValidator", "validate", "Validate script (scriptValidator)"],
  ["scriptConversion", "transform", "Transform script (scriptConversion)"]];

export async function templatesScreen(view) {
  view.append(h("h2", {}, "Templates"));
  const { data } = await api("GET", "/asset-templates" + query({ limit: 500 }));
  view.append(table(["id", "name", "org", "enabled"], data.items, (t, c) => c === "id"
    ? h("a", { href: `#/template/${encodeURIComponent(t.id)}` }, t.id)
    : { name: t.name, org: t.orgId, enabled: t.enabled === false ? "no" : "yes" }[c]));
}

function codeEditor(id, label, value, onInput) {
  const area = h("textarea", { id, spellcheck: "false", rows: 10, wrap: "off", class: "code-text" });
  area.value = value || "";
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  let marked = null;
  const number = () => {
    const n = area.value.split("\n").length;
    clear(gutter);
    for (let i = 1; i <= n; i++) gutter.append(h("span", { class: i === marked ? "marked" : "" }, `${i}\n`));
  };
  area.addEventListener("input", () => { number(); onInput(area.value); });
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  number();
  const box = h("div", { class: "field" }, h("label", { for: id }, label), h("div", { class: "code" }, gutter, area));
  box.mark = (line) => { marked = line; number(); };
  return box;
}

export async function templateEditor(view, id) {
  const { data: doc } = await api("GET", `/asset-templates/${encodeURIComponent(id)}`);
  const orig = JSON.stringify(doc);
  view.append(h("h2", {}, `Template ${doc.id}`), h("p", {}, h("a", { href: "#/templates" }, "← Templates")));
  const editors = {};
  for (const [key, stage, label] of STAGES) {
    editors[stage] = codeEditor(`script-${stage}`, label, doc[key], (v) => {
      if (v.trim()) doc[key] = v; else delete doc[key];
    });
    view.append(editors[stage]);
  }
  const payloads = h("textarea", { id: "sample-payloads", rows: 5, placeholder: '{"temperature": 21.5} (JSON array, or one payload per line)' });
  const out = h("div", { id: "template-result", "aria-live": "polite" });
  const saveOut = h("div", { id: "template-save", role: "status" });
  const run = h("button", { type: "button", id: "run-template", onClick: async () => {
    let list;
    try { list = parseList(payloads.value); } catch (error) { showError(error, out); return; }
    try {
      const { data } = await api("POST", "/asset-templates/test", { template: doc, payloads: list });
      Object.values(editors).forEach((e) => e.mark(null));
      clear(out).append(...data.items.map((r) => {
        const box = h("section", { class: "card report" }, h("h4", {}, `Payload ${r.input}`));
        for (const [, stage] of STAGES) if (stage in r) box.append(h("h5", {}, stage), json(r[stage]));
        if (r.error) {
          const where = r.error.line ? ` at line ${r.error.line}` : "";
          box.append(h("p", { class: "error stage-error" }, `${r.error.stage} failed${where}: ${r.error.message}`));
          if (r.error.line && editors[r.error.stage]) editors[r.error.stage].mark(r.error.line);
        } else box.append(h("h5", {}, "Standard Event"), json(r.standardEvent));
        return box;
      }));
      status(`ran ${data.items.length} payload(s)`);
    } catch (error) { showError(error, out); }
  } }, "Run on samples");
  const save = changeButton("Save", async () => {
    if (JSON.stringify(doc) === orig) { clear(saveOut).append(h("p", {}, "Nothing changed: nothing saved.")); return; }
    try {
      const r = await api("POST", "/apply", { documents: [doc] });
      clear(saveOut).append(h("p", {}, `Saved (configuration revision ${r.data.storeRevision}).`));
      status("saved");
    } catch (error) { showError(error, saveOut); }
  }, { id: "save-template" });
  view.append(field("Sample payloads", payloads), h("div", { class: "actions" }, run, save), saveOut, out);
}
