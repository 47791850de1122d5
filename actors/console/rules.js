// Rules: the list of business rules and rules, and the five-tab business-rule editor
// (General, Variables, Actions, Rules with the visual builder, Debug with test mode).
// The editor works on the documents as the API returned them and changes only what the user
// edits, so saving an unchanged rule sends nothing and an edited one keeps every other field.
import { api, query } from "./api.js";
import { changeButton, session, showError } from "./app.js";
import { clear, field, h, json, parseList, select, status, table, uid } from "./dom.js";
import { builder } from "./builder.js";

const same = (a, b) => JSON.stringify(canon(a)) === JSON.stringify(canon(b));
// Key order aside, and an empty list or object the editor added where the document had none
// (the model's default) is no change.
function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === "object") {
    const keys = Object.keys(v).filter((k) => !isEmpty(v[k])).sort();
    return Object.fromEntries(keys.map((k) => [k, canon(v[k])]));
  }
  return v;
}
const isEmpty = (v) => (Array.isArray(v) ? v.length === 0 : v && typeof v === "object" && Object.keys(v).length === 0);
const copy = (v) => JSON.parse(JSON.stringify(v));

export async function rulesScreen(view) {
  view.append(h("h2", {}, "Rules"));
  const name = h("input", { name: "name", type: "search" });
  const org = h("input", { name: "orgId" });
  const out = h("div", { id: "rule-lists" });
  const form = h("form", { class: "filters", "aria-label": "search rules" },
    field("Name contains", name), field("Organization (and below)", org), h("button", { type: "submit" }, "Search"));
  const load = async () => {
    const q = query({ name: name.value, orgId: org.value, includeChildren: org.value ? true : undefined, limit: 200 });
    try {
      const [brs, rules] = await Promise.all([api("GET", "/business-rules" + q), api("GET", "/rules" + q)]);
      clear(out).append(
        h("h3", {}, "Business rules"),
        table(["id", "name", "org", "rule", "enabled"], brs.data.items, (r, c) => c === "id"
          ? h("a", { href: `#/rule/${encodeURIComponent(r.id)}` }, r.id)
          : { name: r.name, org: r.orgId, rule: r.ruleId, enabled: r.enabled === false ? "no" : "yes" }[c]),
        h("h3", {}, "Rules"),
        table(["id", "name", "org", "shared", "system"], rules.data.items, (r, c) => c === "id"
          ? h("a", { href: `#/rule-only/${encodeURIComponent(r.id)}` }, r.id)
          : { name: r.name, org: r.orgId || "", shared: r.shared ? "yes" : "no", system: r.system ? "yes" : "no" }[c]));
    } catch (error) { showError(error, out); }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  view.append(form, h("p", {}, h("a", { href: "#/rule/new", class: "button" }, "New business rule"), " ",
    h("a", { href: "#/rule-only/new", class: "button" }, "New rule")), out);
  await load();
}

async function loadEditor(id) {
  if (id === "new") {
    const org = session.who.orgId || "";
    return {
      br: { kind: "BusinessRule", id: "", name: "", orgId: org, ruleId: "", enabled: true, timezone: "UTC", parameters: {} },
      rule: { kind: "Rule", id: "", orgId: org, name: "", description: "", variables: [], captureFields: [], actions: [],
        when: { logic: "AND", items: [] } },
      fresh: true,
    };
  }
  const br = (await api("GET", `/business-rules/${encodeURIComponent(id)}`)).data;
  // An ancestor's shared rule or a system rule is not this token's to read: the business
  // rule's own fields stay editable, and test mode runs the stored rule.
  let rule = null;
  try { rule = (await api("GET", `/rules/${encodeURIComponent(br.ruleId)}`)).data; } catch (error) {
    if (error.status !== 404) throw error;
  }
  return { br, rule, fresh: false };
}

// A rule edited on its own: the business rule beside it is a stand-in that test mode runs it
// through (never saved), its parameters' values those the rule's defaults give.
async function loadRuleAlone(id) {
  const org = session.who.orgId || "";
  const rule = id === "new"
    ? { kind: "Rule", id: "", orgId: org, name: "", description: "", variables: [], captureFields: [], actions: [],
      when: { logic: "AND", items: [] } }
    : (await api("GET", `/rules/${encodeURIComponent(id)}`)).data;
  const br = { kind: "BusinessRule", id: "test-mode", name: "test mode", orgId: rule.orgId || org, ruleId: rule.id,
    enabled: true, timezone: "UTC", parameters: {} };
  return { br, rule, fresh: id === "new", alone: true };
}

export async function ruleAloneEditor(view, id) {
  return ruleEditor(view, id, { alone: true });
}

export async function ruleEditor(view, id, { alone = false } = {}) {
  const loaded = alone ? await loadRuleAlone(id) : await loadEditor(id);
  const orig = { br: copy(loaded.br), rule: loaded.rule && copy(loaded.rule) };
  const doc = { br: loaded.br, rule: loaded.rule };
  let triggers = [];
  try { triggers = (await api("GET", "/triggers" + query({ limit: 1000 }))).data.items.map((t) => t.id); } catch { /* viewers of nothing */ }

  const title = alone ? (loaded.fresh ? "New rule" : `Rule ${doc.rule.id}`)
    : loaded.fresh ? "New business rule" : `Business rule ${doc.br.id}`;
  view.append(h("h2", {}, title),
    h("p", {}, h("a", { href: "#/rules" }, "← Rules"), ...(loaded.fresh ? [] : [
      ...(alone ? [] : [" · ", h("a", { href: `#/history/business-rules/${encodeURIComponent(doc.br.id)}` }, "History of the business rule")]),
      ...(doc.rule ? [" · ", h("a", { href: `#/history/rules/${encodeURIComponent(doc.rule.id)}` }, "History of the rule")] : [])])));
  if (alone) view.append(h("p", { class: "note" }, "A rule on its own: Save stores the rule only. Test mode runs it through a stand-in business rule (never saved) with the parameter values given under Variables."));
  const tabs = ["General", "Variables", "Actions", "Rules", "Debug"];
  const tablist = h("div", { role: "tablist", "aria-label": "business rule editor" });
  const panel = h("section", { role: "tabpanel", id: "rule-panel", tabindex: "0" });
  const saveOut = h("div", { id: "save-result", role: "status" });
  let current = "General";
  const buttons = tabs.map((t) => h("button", {
    type: "button", role: "tab", id: `tab-${t}`, "aria-controls": "rule-panel",
    onClick: () => show(t),
    onKeydown: (e) => {
      const i = tabs.indexOf(t);
      const next = e.key === "ArrowRight" ? (i + 1) % tabs.length : e.key === "ArrowLeft" ? (i + tabs.length - 1) % tabs.length : -1;
      if (next >= 0) { e.preventDefault(); show(tabs[next]); buttons[next].focus(); }
    },
  }, t));
  tablist.append(...buttons);

  const render = { General: general, Variables: variables, Actions: actions, Rules: rules, Debug: debug };
  const hidden = (box) => box.append(h("p", { class: "note" }, `The rule ${doc.br.ruleId} is not this token's to read (an ancestor's shared rule or a system rule): only the business rule's own fields are edited here, and test mode runs the stored rule.`));
  function show(t) {
    current = t;
    buttons.forEach((b, i) => {
      const on = tabs[i] === t;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    });
    panel.setAttribute("aria-labelledby", `tab-${t}`);
    clear(panel);
    if (!doc.rule && t !== "General" && t !== "Debug") { hidden(panel); if (t === "Variables") brParameters(panel, doc.br); return; }
    render[t](panel, doc, { triggers, alone, rerender: () => show(current) });
  }

  const save = changeButton("Save", async () => {
    const docs = [];
    if (doc.rule && (loaded.fresh || !same(doc.rule, orig.rule))) docs.push(doc.rule);
    if (!alone && (loaded.fresh || !same(doc.br, orig.br))) docs.push(doc.br);
    if (!docs.length) { clear(saveOut).append(h("p", {}, "Nothing changed: nothing saved.")); status("nothing to save"); return; }
    try {
      const r = await api("POST", "/apply", { documents: docs });
      clear(saveOut).append(h("p", {}, `Saved (configuration revision ${r.data.storeRevision}): `,
        r.data.changes.map((c) => `${c.kind} ${c.id} ${c.op || ""}`).join(", ")));
      status("saved");
      if (loaded.fresh) { location.hash = alone ? `#/rule-only/${encodeURIComponent(doc.rule.id)}` : `#/rule/${encodeURIComponent(doc.br.id)}`; return; }
      orig.br = copy(doc.br); orig.rule = doc.rule && copy(doc.rule);
    } catch (error) { showError(error, saveOut); }
  }, { id: "save-rule" });
  const asJson = h("details", {}, h("summary", {}, "As JSON (what Save applies)"), h("pre", { class: "json", id: "rule-json" }));
  asJson.addEventListener("toggle", () => { asJson.querySelector("pre").textContent = JSON.stringify(alone ? [doc.rule] : doc.rule ? [doc.rule, doc.br] : [doc.br], null, 2); });
  view.append(tablist, panel, h("div", { class: "actions" }, save), saveOut, asJson);
  show("General");
}

// ---------------------------------------------------------------- the tabs
function text(obj, key, label, attrs = {}) {
  const input = h("input", { value: obj[key] ?? "", ...attrs });
  input.addEventListener("input", () => { obj[key] = input.value; });
  return field(label, input);
}

function check(obj, key, label, fallback) {
  const input = h("input", { type: "checkbox", checked: obj[key] ?? fallback });
  input.addEventListener("change", () => { obj[key] = input.checked; });
  return h("div", { class: "field check" }, input, h("label", { for: input.id || (input.id = uid()) }, label));
}

function general(panel, doc, { alone }) {
  const { br, rule } = doc;
  if (alone) {
    const id = h("input", { value: rule.id ?? "", name: "rule-id" });
    id.addEventListener("input", () => { rule.id = id.value; br.ruleId = id.value; });
    const org = h("input", { value: rule.orgId ?? "", name: "rule-org" });
    org.addEventListener("input", () => { rule.orgId = org.value; br.orgId = org.value; });
    panel.append(h("fieldset", {}, h("legend", {}, "Rule"), field("Rule id", id), field("Organization", org),
      text(rule, "name", "Rule name"), text(rule, "description", "Description"),
      check(rule, "shared", "Shared to child organizations", false)));
    return;
  }
  const tzMode = select([["fixed", "fixed"], ["dynamic", "dynamic (organization's, then event's)"]], br.timezone === "dynamic" ? "dynamic" : "fixed");
  const tz = h("input", { value: br.timezone === "dynamic" ? "" : (br.timezone || "UTC"), disabled: br.timezone === "dynamic" });
  tzMode.addEventListener("change", () => {
    tz.disabled = tzMode.value === "dynamic";
    br.timezone = tz.disabled ? "dynamic" : tz.value || "UTC";
  });
  tz.addEventListener("input", () => { br.timezone = tz.value; });
  // A rule in the business rule's organization moves with it (a new rule starts there).
  const org = h("input", { value: br.orgId ?? "", name: "br-org" });
  org.addEventListener("input", () => {
    if (rule && rule.orgId === br.orgId) rule.orgId = org.value;
    br.orgId = org.value;
  });
  const orgField = field("Organization", org);
  const ruleId = h("input", { value: br.ruleId ?? "" });
  ruleId.addEventListener("input", () => { br.ruleId = ruleId.value; if (rule) rule.id = ruleId.value; });
  panel.append(...[
    h("fieldset", {}, h("legend", {}, "Business rule"),
      text(br, "id", "Id", { name: "br-id" }), text(br, "name", "Name", { name: "br-name" }),
      orgField,
      field("Rule id (the rule edited in the other tabs)", ruleId),
      check(br, "enabled", "Enabled", true), check(br, "includeChildren", "Applies to child organizations too", false),
      field("Timezone", tzMode), field("Fixed timezone (IANA)", tz)),
    rule && h("fieldset", {}, h("legend", {}, "Rule"),
      text(rule, "name", "Rule name"), text(rule, "description", "Description"),
      check(rule, "shared", "Shared to child organizations", false))].filter(Boolean));
}

function brParameters(panel, br) {
  const area = h("textarea", { rows: 4 });
  area.value = JSON.stringify(br.parameters || {}, null, 2);
  const problem = h("p", { class: "error", "aria-live": "polite" });
  area.addEventListener("input", () => {
    try { br.parameters = JSON.parse(area.value); problem.textContent = ""; } catch (e) { problem.textContent = e.message; }
  });
  panel.append(field("Parameter values (JSON)", area), problem);
}

function rowsEditor(title, list, columns, make, onChange) {
  const box = h("fieldset", {}, h("legend", {}, title));
  const draw = () => {
    clear(box).append(h("legend", {}, title));
    list.forEach((item, i) => {
      const row = h("div", { class: "row" });
      for (const [key, label, kind] of columns) {
        let input;
        if (Array.isArray(kind)) {
          input = select(kind, item[key]);
          input.addEventListener("change", () => { item[key] = input.value; onChange && onChange(); });
        } else {
          input = h("input", { value: item[key] === undefined || item[key] === null ? "" : (typeof item[key] === "string" ? item[key] : JSON.stringify(item[key])) });
          input.addEventListener("input", () => {
            if (kind === "json") { try { item[key] = JSON.parse(input.value); } catch { item[key] = input.value; } } else item[key] = input.value;
            onChange && onChange();
          });
        }
        row.append(field(`${label} ${i + 1}`, input));
      }
      row.append(h("button", { type: "button", "aria-label": `Remove ${title} ${i + 1}`, onClick: () => { list.splice(i, 1); draw(); } }, "Remove"));
      box.append(row);
    });
    box.append(h("button", { type: "button", onClick: () => { list.push(make()); draw(); } }, `Add ${title.toLowerCase().replace(/s$/, "")}`));
  };
  draw();
  return box;
}

function variables(panel, doc, { alone } = {}) {
  const { rule, br } = doc;
  rule.variables ??= [];
  rule.captureFields ??= [];
  rule.parameters ??= [];
  br.parameters ??= {};
  panel.append(
    rowsEditor("Variables", rule.variables, [["name", "Variable name"], ["type", "Type", ["number", "text", "boolean"]], ["default", "Default", "json"]],
      () => ({ name: "", type: "number", default: 0 })),
    rowsEditor("Capture fields", rule.captureFields, [["name", "Capture field name"], ["type", "Type", ["number", "text", "boolean", "date"]]],
      () => ({ name: "", type: "text" })),
    rowsEditor("Parameters", rule.parameters, [["name", "Parameter name"], ["type", "Type", ["number", "text", "boolean", "date"]], ["default", "Default", "json"]],
      () => ({ name: "", type: "number" })));
  const values = h("fieldset", {}, h("legend", {}, alone ? "Parameter values for test mode" : "Parameter values (this business rule)"));
  for (const p of rule.parameters) {
    const input = h("input", { value: br.parameters[p.name] === undefined ? "" : JSON.stringify(br.parameters[p.name]) });
    input.addEventListener("input", () => {
      if (input.value === "") delete br.parameters[p.name];
      else { try { br.parameters[p.name] = JSON.parse(input.value); } catch { br.parameters[p.name] = input.value; } }
    });
    values.append(field(`Value of ${p.name}`, input));
  }
  panel.append(values);
}

// A value source (event path, state variable, parameter, literal, now), with suggestions.
export function valueRef(ref, label, lists, onChange) {
  const kind = select(["event", "state", "variable", "literal", "now"], ref.type, { "aria-label": `${label} source` });
  const listId = uid("dl");
  const input = h("input", { value: ref.value === undefined || ref.value === null ? "" : (typeof ref.value === "string" && ref.type !== "literal" ? ref.value : JSON.stringify(ref.value)),
    "aria-label": `${label} value`, list: listId, disabled: ref.type === "now" });
  const datalist = h("datalist", { id: listId });
  const suggest = () => {
    clear(datalist).append(...((lists[kind.value] || []).map((v) => h("option", { value: v }))));
  };
  kind.addEventListener("change", () => {
    ref.type = kind.value;
    input.disabled = kind.value === "now";
    if (kind.value === "now") delete ref.value;
    else set();
    suggest();
    onChange && onChange();
  });
  const set = () => {
    if (ref.type === "literal") { try { ref.value = JSON.parse(input.value); } catch { ref.value = input.value; } } else ref.value = input.value;
  };
  input.addEventListener("input", () => { set(); onChange && onChange(); });
  suggest();
  return h("span", { class: "valueref" }, kind, input, datalist);
}

export function suggestions(rule, triggers) {
  return {
    event: ["data.temperature", "data.humidity", "eventType", "metadata.assetId"],
    state: (rule.variables || []).map((v) => v.name),
    variable: (rule.parameters || []).map((p) => p.name),
    literal: [], now: [], triggers, captures: (rule.captureFields || []).map((c) => c.name),
  };
}

function actions(panel, doc, { triggers, rerender }) {
  const { rule } = doc;
  rule.actions ??= [];
  const lists = suggestions(rule, triggers);
  const box = h("div", { id: "actions-list" });
  rule.actions.forEach((a, i) => {
    const fs = h("fieldset", { class: "action" }, h("legend", {}, `${a.type} action ${a.id}`));
    fs.append(text(a, "id", `Action id ${i + 1}`));
    if (a.type === "state") {
      const op = select(["increment", "decrement", "set"], a.op, {});
      op.addEventListener("change", () => { a.op = op.value; });
      const variable = h("input", { value: a.variable || "", list: "dl-state-vars" });
      variable.addEventListener("input", () => { a.variable = variable.value; });
      const value = a.value ?? { type: "literal", value: 1 }; // the model's default, stored only once edited
      fs.append(field("Operation", op), field("State variable", variable),
        h("div", { class: "field" }, h("span", {}, "Value"), valueRef(value, `action ${a.id} value`, lists, () => { a.value = value; })));
    } else if (a.type === "log") {
      fs.append(text(a, "name", "Log name"));
      a.captures ??= {};
      for (const [name, ref] of Object.entries(a.captures)) {
        fs.append(h("div", { class: "row" }, h("span", {}, `capture ${name} =`), valueRef(ref, `capture ${name}`, lists),
          h("button", { type: "button", "aria-label": `Remove capture ${name}`, onClick: () => { delete a.captures[name]; rerender(); } }, "Remove")));
      }
      const cname = h("input", { list: "dl-captures" });
      fs.append(h("div", { class: "row" }, field("Capture field to add", cname),
        h("button", { type: "button", onClick: () => { if (cname.value) { a.captures[cname.value] = { type: "event", value: "data" }; rerender(); } } }, "Add capture")));
    } else if (a.type === "exec") {
      const trig = h("input", { value: a.triggerId || "", list: "dl-triggers" });
      const unknown = h("small", { class: "bad", "aria-live": "polite" });
      const checkTrigger = () => { unknown.textContent = trig.value && !triggers.includes(trig.value) ? `no trigger ${trig.value} in your scope (Save will be refused)` : ""; };
      trig.addEventListener("input", () => { a.triggerId = trig.value; checkTrigger(); });
      checkTrigger();
      fs.append(field("Trigger", trig), unknown, messageEditor(a, i + 1, lists));
    }
    fs.append(h("button", { type: "button", onClick: () => { rule.actions.splice(i, 1); rerender(); } }, `Remove action ${a.id}`));
    box.append(fs);
  });
  const kind = select(["state", "log", "exec"], "state");
  const add = h("button", { type: "button", onClick: () => {
    const n = rule.actions.length + 1;
    const base = { id: `a${n}`, type: kind.value };
    if (kind.value === "state") Object.assign(base, { op: "increment", variable: lists.state[0] || "" });
    if (kind.value === "log") Object.assign(base, { captures: {} });
    if (kind.value === "exec") Object.assign(base, { triggerId: triggers[0] || "" });
    rule.actions.push(base);
    rerender();
  } }, "Add action");
  panel.append(
    h("datalist", { id: "dl-state-vars" }, lists.state.map((v) => h("option", { value: v }))),
    h("datalist", { id: "dl-captures" }, lists.captures.map((v) => h("option", { value: v }))),
    h("datalist", { id: "dl-triggers" }, triggers.map((v) => h("option", { value: v }))),
    box, h("div", { class: "row" }, field("New action type", kind), add));
}

// An exec action's message, with a picker of the placeholders the engine fills in
// (pipeline/templating.py: state, params, event, metadata; secrets only at delivery).
function messageEditor(action, n, lists) {
  const area = h("textarea", { rows: 2, value: action.message ?? "" });
  area.value = action.message ?? "";
  area.addEventListener("input", () => { if (area.value) action.message = area.value; else delete action.message; });
  const choices = [
    ...lists.state.map((v) => [`{{state.${v}}}`, `state variable ${v}`]),
    ...lists.variable.map((p) => [`{{params.${p}}}`, `parameter ${p}`]),
    ...lists.event.map((e) => [`{{event.${e}}}`, `event ${e}`]),
    ["{{metadata.assetId}}", "the asset's id"],
    ["{{secrets.NAME}}", "a secret (resolved at delivery, never logged)"],
  ];
  const pick = select(choices, choices[0][0], { "aria-label": `Placeholder for message ${n}` });
  const insert = h("button", { type: "button", onClick: () => {
    const at = area.selectionStart ?? area.value.length;
    area.value = area.value.slice(0, at) + pick.value + area.value.slice(area.selectionEnd ?? at);
    area.dispatchEvent(new Event("input"));
    area.focus();
    area.setSelectionRange(at + pick.value.length, at + pick.value.length);
  } }, `Insert into message ${n}`);
  return h("div", {}, field(`Message of action ${n}`, area, "placeholders {{...}} are filled in when the action runs"),
    h("div", { class: "row" }, pick, insert));
}

function rules(panel, doc, { triggers }) {
  panel.append(h("p", {}, "Arrow keys move between items; Alt+Arrow Up/Down (or the Up/Down buttons, or drag) reorder; Alt+ArrowRight moves an item into the group above it, Alt+ArrowLeft out of its group (or drag it there)."),
    builder(doc.rule.when, suggestions(doc.rule, triggers), (doc.rule.actions || []).map((a) => a.id)));
}

// ---------------------------------------------------------------- Debug: test mode
function debug(panel, doc) {
  const events = h("textarea", { id: "debug-events", rows: 8, placeholder: '{"event": {"eventType": "reading", "data": {"temperature": -10}}, "assetId": "..."}' });
  const state = h("textarea", { id: "debug-state", rows: 2, placeholder: "{} (optional starting state)" });
  const asset = h("input", { id: "debug-asset", list: "dl-debug-assets" });
  const template = h("select", { id: "debug-template" }, h("option", { value: "" }, "none: the lines are events"));
  const assets = h("datalist", { id: "dl-debug-assets" });
  // The pickers' choices: what the token may read (a failure leaves them empty).
  api("GET", "/assets" + query({ limit: 1000 })).then(({ data }) => assets.append(...data.items.map((a) => h("option", { value: a.id }, a.name || a.id)))).catch(() => {});
  api("GET", "/asset-templates" + query({ limit: 1000 })).then(({ data }) => template.append(...data.items.map((t) => h("option", { value: t.id }, t.id)))).catch(() => {});
  const out = h("div", { id: "debug-result", "aria-live": "polite" });
  // Raw payloads go through the chosen template first (the template test route), then each
  // Standard Event, with the chosen asset, into test mode.
  const toEvents = async (lines) => {
    let list = lines;
    if (template.value) {
      const tpl = (await api("GET", `/asset-templates/${encodeURIComponent(template.value)}`)).data;
      const ran = (await api("POST", "/asset-templates/test", { template: tpl, payloads: lines })).data.items;
      const failed = ran.find((r) => r.error);
      if (failed) throw new Error(`payload ${failed.input}: ${failed.error.stage} failed${failed.error.line ? ` at line ${failed.error.line}` : ""}: ${failed.error.message}`);
      list = ran.map((r) => ({ event: r.standardEvent }));
    }
    if (!asset.value) return list;
    return list.map((line) => (line && line.event ? { assetId: asset.value, ...line } : { event: line, assetId: asset.value }));
  };
  const run = h("button", { type: "button", id: "run-test", onClick: async () => {
    try {
      const body = { businessRule: doc.br, events: await toEvents(parseList(events.value)) };
      if (doc.rule) body.rule = doc.rule;
      if (state.value.trim()) body.state = JSON.parse(state.value);
      const { data } = await api("POST", "/business-rules/test", body);
      clear(out).append(...data.items.map(report));
      status(`test mode: ${data.items.length} event(s)`);
    } catch (error) { showError(error, out); }
  } }, "Run test mode");
  panel.append(h("p", {}, "Events (JSON array or one per line): a Standard Event, or {event, at?, assetId?, orgId?}; or raw payloads, with a template chosen. Runs the production engine on a sandbox state; nothing is stored, no trigger is called."),
    h("div", { class: "row" }, field("Template for raw payloads", template), field("Asset", asset), assets),
    field("Test events", events), field("Starting state (JSON)", state), run, out);
}

function traceNode(node) {
  const mark = node.result ? "✔" : "✘";
  if (node.type === "group") {
    return h("li", { class: node.result ? "pass" : "fail" }, `${mark} ${node.logic} (${node.path})`,
      h("ul", {}, (node.items || []).map(traceNode)));
  }
  return h("li", { class: node.result ? "pass" : "fail" },
    `${mark} ${JSON.stringify(node.left)} ${node.operator}${/^(not)?[eE]xists$/.test(node.operator) ? "" : ` ${JSON.stringify(node.right)}`} (${node.path})`);
}

function report(r) {
  const box = h("section", { class: "card report" }, h("h4", {}, `${r.eventTrackerId}: ${r.inScope ? (r.matched ? "matched" : "not matched") : "not in scope"}`));
  if (!r.inScope) { box.append(h("p", {}, r.reason)); return box; }
  if (r.error) box.append(h("p", { class: "error" }, r.error));
  box.append(h("h5", {}, "Evaluation"), h("ul", { class: "trace" }, [].concat(r.trace || []).map(traceNode)),
    h("h5", {}, "State changes"), json(r.stateChanges || {}),
    h("h5", {}, "Captures"), json(r.captures || []),
    h("h5", {}, "Exec actions it would run"), json(r.execs || []));
  return box;
}
