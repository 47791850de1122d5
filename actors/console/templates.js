// Templates: the list, new templates and copies, and an editor of a template whole: its fields
// (name, enabled, shared, assetIdPath), the three scripts (decode, validate, transform) with
// syntax highlighting and line numbers, its EVA fields (dynamicFields), run on sample
// payloads through the API (the `templates test` engine and limits: each stage's output or
// error with its line, and the value each EVA field would store), validated by a dry run,
// saved as a revision, deleted (a 409 names what still uses it).
import { api, query } from "./api.js";
import { changeButton, session, showError } from "./app.js";
import { clear, field, h, json, parseList, select, status, table } from "./dom.js";
import { render } from "./highlight.js";

const STAGES = [["scriptProcessor", "decode", "Decode script (scriptProcessor)"],
  ["scriptValidator", "validate", "Validate script (scriptValidator)"],
  ["scriptConversion", "transform", "Transform script (scriptConversion)"]];
const EVA_TYPES = ["number", "string", "bool", "date", "geo"];
const BLANK_TRANSFORM = `// payload: the decoded, validated payload; result: the Standard Event.
result = {
  eventType: "reading",
  eventId: String(payload.id ?? Date.now()),
  data: payload,
  created: new Date(payload.ts ?? Date.now()).toISOString(),
};
`;

export async function templatesScreen(view, mode) {
  if (mode === "new") return templateEditor(view, null, "new");
  const at = location.hash;
  const { data } = await api("GET", "/asset-templates" + query({ limit: 500 }));
  if (location.hash !== at) return; // navigated elsewhere meanwhile: that screen owns the view
  view.append(h("h2", {}, "Templates"),
    h("p", {}, h("a", { href: "#/templates/new", class: "button", id: "new-template" }, "New template")));
  view.append(table(["id", "name", "org", "enabled", ""], data.items, (t, c) => {
    if (c === "id") return h("a", { href: `#/template/${encodeURIComponent(t.id)}` }, t.id);
    if (c === "") return h("a", { href: `#/template/${encodeURIComponent(t.id)}/copy`, "aria-label": `Copy ${t.id}` }, "Copy");
    return { name: t.name, org: t.orgId, enabled: t.enabled === false ? "no" : "yes" }[c];
  }));
}

// A script editor: a labelled textarea (the real control, its text transparent) over a
// highlighted <pre> hidden from assistive technology, same font, padding and scroll; a line
// number gutter whose failing line is marked.
function codeEditor(id, label, value, onInput) {
  const area = h("textarea", { id, spellcheck: "false", rows: 10, wrap: "off", class: "code-text" });
  area.value = value || "";
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const layer = h("pre", { class: "code-hl", "aria-hidden": "true" });
  let marked = null;
  const number = () => {
    const n = area.value.split("\n").length;
    clear(gutter);
    for (let i = 1; i <= n; i++) gutter.append(h("span", { class: i === marked ? "marked" : "" }, `${i}\n`));
  };
  const sync = () => { layer.scrollTop = area.scrollTop; layer.scrollLeft = area.scrollLeft; gutter.scrollTop = area.scrollTop; };
  const paint = () => { number(); render(layer, area.value); sync(); };
  area.addEventListener("input", () => { paint(); onInput(area.value); });
  area.addEventListener("scroll", sync);
  paint();
  const box = h("div", { class: "field" }, h("label", { for: id }, label),
    h("div", { class: "code" }, gutter, h("div", { class: "code-stack" }, layer, area)));
  box.mark = (line) => { marked = line; number(); };
  return box;
}

function text(attrs, value, onInput) {
  const input = h("input", { type: "text", ...attrs, value: value ?? "" });
  input.addEventListener("input", () => onInput(input.value));
  return input;
}

function checkbox(id, label, checked, onChange) {
  const input = h("input", { type: "checkbox", id, checked });
  input.addEventListener("change", () => onChange(input.checked));
  return h("div", { class: "field check" }, input, h("label", { for: id }, label));
}

function shown(item, type) {
  if (!item) return "—";
  if (item.rejected) return "rejected (not a " + type + ")";
  if (!("value" in item)) return item.status === "deprecated" ? "not extracted (deprecated)" : "no value";
  if (type === "date") return new Date(item.value).toISOString();
  return String(item.value);
}

// The EVA fields (dynamicFields): a row per field, added and removed here; next to each the
// value it would store for each sample of the last run (the API's own extraction).
function evaFields(doc, samples) {
  const had = "dynamicFields" in doc;
  const fields = doc.dynamicFields || [];
  const commit = () => { if (fields.length || had) doc.dynamicFields = fields; else delete doc.dynamicFields; };
  const box = h("div", { id: "eva-fields" });
  const draw = () => {
    const rows = fields.map((f, i) => {
      const n = i + 1;
      const id = text({ inputmode: "numeric", size: 6, "aria-label": `EVA field ${n} id` }, f.fieldId, (v) => {
        f.fieldId = /^\s*-?\d+\s*$/.test(v) ? Number(v) : v; commit();
      });
      const name = text({ "aria-label": `EVA field ${n} name` }, f.field, (v) => { f.field = v; commit(); });
      const path = text({ "aria-label": `EVA field ${n} value path`, placeholder: "data.temperature" }, f.value, (v) => { f.value = v; commit(); });
      const type = select(EVA_TYPES, f.type, { "aria-label": `EVA field ${n} type` });
      type.addEventListener("change", () => { f.type = type.value; commit(); });
      const state = select(["active", "deprecated"], f.status || "active", { "aria-label": `EVA field ${n} status` });
      state.addEventListener("change", () => {
        if (state.value === "active" && !("status" in f)) return;
        f.status = state.value; commit();
      });
      const values = samples.items.filter((r) => r.eva).map((r) => {
        const item = r.eva.find((e) => e.fieldId === f.fieldId);
        return h("div", { class: item && item.rejected ? "bad" : "" }, `payload ${r.input}: ${shown(item, f.type)}`);
      });
      const remove = h("button", { type: "button", "aria-label": `Remove EVA field ${n}`, onClick: () => {
        fields.splice(i, 1); commit(); draw();
        box.querySelector("#add-eva-field").focus(); // the row and its button are gone
      } }, "Remove");
      return h("tr", {}, [id, name, path, type, state].map((c) => h("td", {}, c)),
        h("td", { class: "eva-sample" }, values.length ? values : "—"), h("td", {}, remove));
    });
    const add = h("button", { type: "button", id: "add-eva-field", onClick: () => {
      const used = new Set(fields.map((f) => f.fieldId));
      let next = 1;
      while (used.has(next)) next++;
      fields.push({ fieldId: next, field: "", value: "", type: "number" });
      commit(); draw();
      box.querySelector(`[aria-label="EVA field ${fields.length} name"]`).focus();
    } }, "Add EVA field");
    clear(box).append(
      h("table", { class: "eva" },
        h("thead", {}, h("tr", {}, ["field id", "name", "value (dot path into the Standard Event)", "type", "status",
          "value per sample (last run)", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows)),
      ...(fields.length ? [] : [h("p", {}, "No EVA fields.")]), add);
  };
  draw();
  return { box, draw };
}

function fresh(mode, source) {
  if (mode === "new") {
    return { kind: "AssetTemplate", id: "", orgId: session.who.orgId || "", name: "", enabled: true,
      scriptConversion: BLANK_TRANSFORM };
  }
  return { ...structuredClone(source), id: `${source.id}-copy`, name: `${source.name} (copy)` };
}

export async function templateEditor(view, id, mode) {
  let source = null;
  const at = location.hash;
  if (id) source = (await api("GET", `/asset-templates/${encodeURIComponent(id)}`)).data;
  if (location.hash !== at) return; // navigated elsewhere meanwhile
  let creating = mode === "new" || (mode === "copy" && !!source);
  const doc = creating ? fresh(mode, source) : source;
  let orig = creating ? null : JSON.stringify(doc);
  const title = h("h2", {}, mode === "new" ? "New template" : creating ? `Copy of template ${id}` : `Template ${doc.id}`);
  view.append(title, h("p", {}, h("a", { href: "#/templates" }, "← Templates"), ...(creating ? [] : [" · ",
    h("a", { href: `#/history/asset-templates/${encodeURIComponent(doc.id)}` }, "History (diffs, rollback)")])));

  const set = (key) => (v) => { if (v.trim()) doc[key] = v; else delete doc[key]; };
  const idInput = text({ id: "template-id", required: true, readonly: !creating }, doc.id, (v) => { doc.id = v.trim(); });
  const orgInput = text({ id: "template-org", readonly: !creating }, doc.orgId, (v) => { doc.orgId = v.trim(); });
  view.append(h("fieldset", { class: "template-fields" }, h("legend", {}, "Template"),
    h("div", { class: "row" },
      field("Id", idInput, creating ? "a new id: saving creates it" : null),
      field("Organization", orgInput),
      field("Name", text({ id: "template-name", size: 36 }, doc.name, (v) => { doc.name = v; })),
      field("Asset id path", text({ id: "template-asset-id-path", placeholder: "deviceId" }, doc.assetIdPath, set("assetIdPath")),
        "dot path into the payload naming the device (optional)")),
    h("div", { class: "row" },
      checkbox("template-enabled", "Enabled", doc.enabled !== false, (v) => { doc.enabled = v; }),
      checkbox("template-shared", "Shared with child organizations", !!doc.shared, (v) => { doc.shared = v; }))));

  const editors = {};
  for (const [key, stage, label] of STAGES) {
    editors[stage] = codeEditor(`script-${stage}`, label, doc[key], set(key));
    view.append(editors[stage]);
  }
  const samples = { items: [] };
  const eva = evaFields(doc, samples);
  view.append(h("fieldset", {}, h("legend", {}, "EVA fields (dynamicFields)"), eva.box));
  view.append(h("details", { class: "script-test" }, h("summary", {}, "Test script (scriptTest: stored with the template, not run here)"),
    codeEditor("script-test", "Test script (scriptTest)", doc.scriptTest, set("scriptTest"))));

  const payloads = h("textarea", { id: "sample-payloads", rows: 5, placeholder: '{"temperature": 21.5} (JSON array, or one payload per line)' });
  const out = h("div", { id: "template-result", "aria-live": "polite" });
  const saveOut = h("div", { id: "template-save", role: "status" });
  const run = h("button", { type: "button", id: "run-template", onClick: async () => {
    let list;
    try { list = parseList(payloads.value); } catch (error) { showError(error, out); return; }
    try {
      const { data } = await api("POST", "/asset-templates/test", { template: doc, payloads: list });
      Object.values(editors).forEach((e) => e.mark(null));
      samples.items = data.items;
      eva.draw();
      clear(out).append(...data.items.map((r) => {
        const box = h("section", { class: "card report" }, h("h4", {}, `Payload ${r.input}`));
        for (const [, stage] of STAGES) if (stage in r) box.append(h("h5", {}, stage), json(r[stage]));
        if (r.error) {
          const where = r.error.line ? ` at line ${r.error.line}` : "";
          box.append(h("p", { class: "error stage-error" }, `${r.error.stage} failed${where}: ${r.error.message}`));
          if (r.error.line && editors[r.error.stage]) editors[r.error.stage].mark(r.error.line);
        } else {
          box.append(h("h5", {}, "Standard Event"), json(r.standardEvent));
          if (r.eva) {
            box.append(h("h5", {}, "EVA fields"), table(["field id", "name", "type", "value"], r.eva, (e, c) =>
              ({ "field id": String(e.fieldId), name: e.field, type: e.type, value: shown(e, e.type) }[c])));
          }
        }
        return box;
      }));
      status(`ran ${data.items.length} payload(s)`);
    } catch (error) { showError(error, out); }
  } }, "Run on samples");

  const validate = changeButton("Validate", async () => {
    try {
      const { data } = await api("POST", "/dry-run", { documents: [doc] });
      const lines = data.issues.map((i) => `${i.path || "(document)"}: ${i.reason}`);
      clear(saveOut).append(data.valid
        ? h("p", { class: "valid" }, "Valid: saving would be accepted.")
        : h("pre", { class: "error", role: "alert" }, ["Not valid:", ...lines].join("\n")));
    } catch (error) { showError(error, saveOut); }
  }, { id: "validate-template" });

  const save = changeButton("Save", async () => {
    if (!creating && JSON.stringify(doc) === orig) { clear(saveOut).append(h("p", {}, "Nothing changed: nothing saved.")); return; }
    try {
      if (creating) {
        // A new id is created (409 if it is taken), never an existing template replaced.
        const r = await api("POST", "/asset-templates", doc);
        creating = false;
        idInput.readOnly = orgInput.readOnly = true;
        idInput.parentElement.querySelector("small")?.remove(); // no longer "a new id"
        title.textContent = `Template ${doc.id}`;
        history.replaceState(null, "", `#/template/${encodeURIComponent(doc.id)}`);
        clear(saveOut).append(h("p", {}, `Created ${doc.id} (configuration revision ${r.data.storeRevision}).`));
        confirmDelete.before(copyLink(), remove);
      } else {
        const r = await api("POST", "/apply", { documents: [doc] });
        clear(saveOut).append(h("p", {}, `Saved (configuration revision ${r.data.storeRevision}).`));
      }
      orig = JSON.stringify(doc);
      status("saved");
    } catch (error) { showError(error, saveOut); }
  }, { id: "save-template" });

  // Delete asks once more in the page (a second button), then the API answers: a 409 names
  // the entities that still use the template.
  const confirmDelete = changeButton("Confirm delete", async () => {
    try {
      await api("DELETE", `/asset-templates/${encodeURIComponent(doc.id)}`);
      status(`deleted ${doc.id}`);
      location.hash = "#/templates";
    } catch (error) {
      showError(error, saveOut);
      const referrers = (error.body && error.body.referrers) || []; // a 409: who still uses it
      if (referrers.length) {
        saveOut.append(h("p", {}, "Still used by:"), h("ul", { class: "referrers" }, referrers.map((r) =>
          h("li", {}, `${r.kind} ${r.id} (${r.path})`))));
      }
      if (error.body && error.body.hiddenReferrers) saveOut.append(h("p", {}, `and ${error.body.hiddenReferrers} outside your organization`));
    }
    confirmDelete.hidden = true;
  }, { id: "confirm-delete-template", class: "danger" });
  confirmDelete.hidden = true;
  const remove = changeButton("Delete", () => { confirmDelete.hidden = false; confirmDelete.focus(); }, { id: "delete-template" });
  const copyLink = () => h("a", { class: "button", id: "copy-template", href: `#/template/${encodeURIComponent(doc.id)}/copy` }, "Copy");

  view.append(field("Sample payloads", payloads),
    h("div", { class: "actions template-actions" }, run, validate, save, creating ? null : copyLink(), creating ? null : remove, confirmDelete),
    saveOut, out);
}
