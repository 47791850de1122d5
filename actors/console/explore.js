// Stored data and what can be done again with it: the Events explorer (paged, exported), an
// event's story, the Logs (rule, capture, trigger... rows, paged, exported), the DLQ (paged,
// redriven one by one or by filter) and Replays of a range of an organization's events.
import { api, ApiError, PREFIX, query, token } from "./api.js";
import { changeButton, confirmStep, showError } from "./app.js";
import { clear, field, h, json, select, status, table } from "./dom.js";

const iso = (v) => (v ? new Date(v).toISOString() : undefined);
const short = (v, n = 160) => {
  if (v === null || v === undefined) return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > n ? `${s.slice(0, n)}…` : s;
};
const storyLink = (id) => h("a", { href: `#/story/${encodeURIComponent(id)}` }, id);

// A page size control: rows per page the API returns.
function pageSize(value = 100, max = 10000) {
  return h("input", { name: "limit", type: "number", min: 1, max, value: String(value), class: "narrow" });
}

// A list read page by page: `fetchPage(cursor)` answers {rows, next}; "More" appends the next
// page to the same table while the API gives a cursor.
async function paged(out, columns, cell, fetchPage, noun = "row(s)") {
  const body = h("tbody", {});
  const count = h("p", { class: "count", role: "status" });
  const more = h("button", { type: "button", class: "more" }, "More");
  let shown = 0, cursor = null;
  const add = (page) => {
    for (const r of page.rows) body.append(h("tr", {}, columns.map((c) => h("td", {}, cell(r, c)))));
    shown += page.rows.length;
    cursor = page.next;
    more.hidden = !cursor;
    count.textContent = `${shown} ${noun}${cursor ? " shown, more follow" : ""}`;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try { add(await fetchPage(cursor)); } catch (error) { showError(error); } finally { more.disabled = false; }
  });
  // Only the latest search is shown: an earlier one that answers later is dropped.
  const gen = String(Number(out.dataset.gen || 0) + 1);
  out.dataset.gen = gen;
  const first = await fetchPage(null);
  if (out.dataset.gen !== gen) return;
  add(first);
  clear(out).append(count,
    h("table", {}, h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), body),
    more);
}

// An export: the API streams every page in the format asked; the token goes in a header (a
// plain link cannot carry it), so the answer is fetched, then saved through a blob: URL.
async function download(path, params, format, name) {
  const response = await fetch(PREFIX + path + query({ ...params, format, all: true }),
    { headers: { Authorization: `Bearer ${token()}` } });
  if (!response.ok) {
    const text = await response.text();
    let data = null;
    try { data = JSON.parse(text); } catch { data = { error: text }; }
    throw new ApiError(response.status, data);
  }
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: `${name}.${format}`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  status(`exported ${name}.${format} (${blob.size} bytes)`);
}

function exportButtons(label, params, name, where) {
  return h("div", { class: "actions", role: "group", "aria-label": label },
    ["json", "jsonl", "csv"].map((format) => h("button", {
      type: "button", "aria-label": `Export ${format.toUpperCase()}`,
      onClick: async () => { try { await download(...params(), format, name); } catch (error) { showError(error, where); } },
    }, `Export ${format.toUpperCase()}`)));
}

// ---------------------------------------------------------------- Events
export async function eventsScreen(view) {
  view.append(h("h2", {}, "Events"));
  const f = {
    orgId: h("input", { name: "orgId" }), assetId: h("input", { name: "assetId" }),
    eventType: h("input", { name: "eventType" }),
    since: h("input", { name: "since", type: "datetime-local" }), until: h("input", { name: "until", type: "datetime-local" }),
    where: h("textarea", { name: "where", rows: 2, placeholder: "temperature > -15" }),
    limit: pageSize(),
  };
  const results = h("div", { id: "event-results" });
  const form = h("form", { class: "filters", "aria-label": "event filters" },
    field("Organization", f.orgId), field("Asset", f.assetId), field("Event type", f.eventType),
    field("Since", f.since), field("Until", f.until),
    field("EVA filters (one per line)", f.where, "FIELD OP VALUE; OP one of = != > >= < <="),
    field("Rows per page", f.limit),
    h("button", { type: "submit" }, "Search"));
  const tracker = h("input", { name: "tracker", id: "tracker" });
  const storyForm = h("form", { class: "filters", "aria-label": "find an event" },
    field("Event tracker id", tracker), h("button", { type: "submit" }, "Show story"));
  storyForm.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/story/${encodeURIComponent(tracker.value.trim())}`; });
  const filters = () => ({
    orgId: f.orgId.value, includeChildren: f.orgId.value ? true : undefined, assetId: f.assetId.value,
    eventType: f.eventType.value, since: iso(f.since.value), until: iso(f.until.value),
    where: f.where.value.split("\n").map((s) => s.trim()),
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const params = { ...filters(), limit: f.limit.value };
    try {
      await paged(results, ["created", "org", "asset", "type", "tracker id", "payload"], (r, c) => {
        if (c === "tracker id") return storyLink(r.event_tracker_id);
        return { created: r.created, org: r.org_id, asset: r.asset_id, type: r.event_type,
          payload: short(r.payload, 120) }[c];
      }, async (cursor) => {
        const { data } = await api("GET", "/events" + query({ ...params, cursor }));
        return { rows: data.rows || [], next: data.nextCursor };
      }, "event(s)");
    } catch (error) { showError(error, results); }
  });
  view.append(storyForm, form,
    exportButtons("export the events of these filters", () => ["/events", filters()], "events", results),
    results);
}

export async function storyScreen(view, tracker) {
  view.append(h("h2", {}, "Event story"), h("p", {}, h("a", { href: "#/events" }, "← Events")));
  const { data } = await api("GET", `/events/${encodeURIComponent(tracker)}/story`);
  view.append(h("p", { id: "story-tracker" }, `eventTrackerId ${tracker}`));
  view.append(h("h3", {}, "Summary"), json(data.summary), h("h3", {}, `Steps${data.truncated ? " (truncated)" : ""}`));
  const steps = data.steps || [];
  view.append(h("ol", { class: "story" }, steps.map((s) =>
    h("li", {}, h("strong", {}, s.kind), " ", s.at, json(s.record)))));
}

// ---------------------------------------------------------------- Logs
// Per kind, the columns shown (every column is in the export).
const LOGS = {
  rules: ["created", "org_id", "asset_id", "business_rule_id", "matched", "actions", "error"],
  captures: ["created", "org_id", "asset_id", "business_rule_id", "action_id", "name", "fields"],
  triggers: ["created", "org_id", "business_rule_id", "action_id", "trigger_id", "attempt", "success", "duration_ms", "error"],
  scripts: ["created", "org_id", "asset_id", "template_id", "success", "failed_stage", "duration_us", "error", "error_line"],
  routers: ["created", "org_id", "route_group_id", "version", "evaluated", "matched", "dispatched", "skipped"],
  raw: ["created", "org_id", "asset_id", "data_source_id", "stage", "reason"],
};
// The filters each log kind has (the API answers 422 for one it lacks: they are turned off).
const FILTERS = {
  rules: ["assetId", "businessRuleId"], captures: ["assetId", "businessRuleId"], triggers: ["businessRuleId"],
  scripts: ["assetId", "dataSourceId", "stage"], routers: ["routeGroupId"], raw: ["assetId", "dataSourceId", "stage"],
};

export async function logsScreen(view) {
  view.append(h("h2", {}, "Logs"));
  const kind = select([["rules", "rule evaluations"], ["captures", "captures"], ["triggers", "trigger deliveries"],
    ["scripts", "script runs"], ["routers", "routing"], ["raw", "ingress refusals (raw)"]],
  "rules", { id: "log-kind", name: "kind" });
  const f = {
    orgId: h("input", { name: "orgId" }), assetId: h("input", { name: "assetId" }),
    businessRuleId: h("input", { name: "businessRuleId" }),
    dataSourceId: h("input", { name: "dataSourceId" }), routeGroupId: h("input", { name: "routeGroupId" }),
    stage: h("input", { name: "stage" }),
    eventTrackerId: h("input", { name: "eventTrackerId" }),
    since: h("input", { name: "since", type: "datetime-local" }), until: h("input", { name: "until", type: "datetime-local" }),
    limit: pageSize(),
  };
  const results = h("div", { id: "log-results" });
  const optional = ["assetId", "businessRuleId", "dataSourceId", "routeGroupId", "stage"];
  const applicable = () => { for (const name of optional) f[name].disabled = !FILTERS[kind.value].includes(name); };
  kind.addEventListener("change", applicable);
  const form = h("form", { class: "filters", "aria-label": "log filters" },
    field("Log", kind), field("Organization", f.orgId), field("Asset", f.assetId),
    field("Business rule", f.businessRuleId), field("Data source", f.dataSourceId),
    field("Route group", f.routeGroupId), field("Stage", f.stage, "scripts: the failed stage"),
    field("Event tracker id", f.eventTrackerId),
    field("Since", f.since), field("Until", f.until), field("Rows per page", f.limit),
    h("button", { type: "submit" }, "Search"));
  const filters = () => ({
    orgId: f.orgId.value, includeChildren: f.orgId.value ? true : undefined,
    ...Object.fromEntries(optional.filter((name) => !f[name].disabled).map((name) => [name, f[name].value.trim()])),
    eventTrackerId: f.eventTrackerId.value, since: iso(f.since.value), until: iso(f.until.value),
    newestFirst: true,
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const which = kind.value, params = { ...filters(), limit: f.limit.value };
    try {
      await paged(results, [...LOGS[which], "tracker id"], (r, c) =>
        (c === "tracker id" ? storyLink(r.event_tracker_id) : short(r[c])),
      async (cursor) => {
        const { data } = await api("GET", `/logs/${which}` + query({ ...params, cursor }));
        return { rows: data.rows || [], next: data.nextCursor };
      });
    } catch (error) { showError(error, results); }
  });
  view.append(form,
    exportButtons("export the log rows of these filters", () => [`/logs/${kind.value}`, filters()], "logs", results),
    results);
  applicable();
}

// ---------------------------------------------------------------- DLQ
export async function dlqScreen(view) {
  view.append(h("h2", {}, "Dead-letter queue"));
  const which = select([["no", "not redriven"], ["yes", "redriven"], ["all", "all"]], "no", { id: "dlq-which" });
  const f = {
    stage: h("input", { name: "stage", placeholder: "validate, transform, bind…" }),
    orgId: h("input", { name: "orgId" }), assetId: h("input", { name: "assetId" }),
    since: h("input", { name: "since", type: "datetime-local" }), until: h("input", { name: "until", type: "datetime-local" }),
    source: select([["all", "DLQ and ingress refusals"], ["dlq", "DLQ"], ["raw", "ingress refusals at bind"]], "all", { name: "source" }),
    limit: pageSize(200, 1000),
  };
  const out = h("div", { id: "dlq-results" });
  const result = h("div", { id: "redrive-result", role: "status" });
  const confirm = h("div", { id: "redrive-confirm" });
  const filters = () => ({
    stage: f.stage.value.trim(), orgId: f.orgId.value.trim(), assetId: f.assetId.value.trim(),
    since: iso(f.since.value), until: iso(f.until.value), source: f.source.value,
  });
  const load = async () => {
    const params = { ...filters(), redriven: which.value, limit: f.limit.value };
    try {
      await paged(out, ["made", "org", "stage", "error", "tracker id", ""], (e, c) => {
        const id = e.eventTrackerId;
        if (c === "") {
          if (e.redriven) return `redriven ${e.redriven.at}`;
          return changeButton("Redrive", async () => {
            try {
              const r = await api("POST", "/dlq/redrive" + query({ wait: 10 }), { eventTrackerId: id });
              clear(result).append(h("p", {}, `redrive of ${id}:`), json(r.data.summary));
              status(`redriven: ${id}`);
              await load();
            } catch (error) { showError(error, result); }
          }, { "aria-label": `Redrive ${id}` });
        }
        if (c === "tracker id") return storyLink(id);
        return { made: e.created, org: e.orgId, stage: e.stage, error: short(e.error, 200) }[c];
      }, async (cursor) => {
        const { data } = await api("GET", "/dlq" + query({ ...params, cursor }));
        return { rows: data.items || [], next: data.nextCursor };
      }, "entr(ies)");
    } catch (error) { showError(error, out); }
  };
  // Redrive what the filters select (not redriven yet), or everything in scope when no
  // filter is given: a dry run says how many, the confirmation then redrives them.
  const body = () => {
    const b = Object.fromEntries(Object.entries(filters()).filter(([, v]) => v));
    const filtered = ["stage", "orgId", "assetId", "since", "until"].some((k) => b[k]);
    return filtered ? b : { ...b, all: true };
  };
  const redriveMatching = changeButton("Redrive all matching…", async () => {
    clear(result);
    const b = body();
    try {
      const plan = (await api("POST", "/dlq/redrive" + query({ dryRun: true }), b)).data;
      const what = b.all ? "every entry in your scope" : "the entries these filters select";
      confirmStep(confirm,
        `Redrive ${what}: ${plan.summary.wouldRedrive} would be redriven, ${plan.summary.skipped} skipped.`,
        "Confirm redrive", async () => {
          try {
            const r = (await api("POST", "/dlq/redrive" + query({ wait: 10 }), b)).data;
            clear(confirm);
            clear(result).append(h("p", {}, `redrive ${r.summary.redriveId}: ${r.summary.redriven} redriven, `
              + `${r.summary.skipped} skipped, ${r.summary.failed} failed`), json(r.summary));
            status(`redriven: ${r.summary.redriven}`);
            await load();
          } catch (error) { showError(error, result); }
        });
    } catch (error) { showError(error, result); }
  }, { id: "redrive-matching" });
  const form = h("form", { class: "filters", "aria-label": "dead-letter filters" },
    field("Show", which), field("Stage", f.stage), field("Organization", f.orgId), field("Asset", f.assetId),
    field("Since", f.since), field("Until", f.until), field("Source", f.source),
    field("Entries per page (per source)", f.limit),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  which.addEventListener("change", load);
  view.append(form, h("div", { class: "actions" }, redriveMatching), confirm, result, out);
  await load();
}

// ---------------------------------------------------------------- Replays
export async function replaysScreen(view) {
  view.append(h("h2", {}, "Replay"),
    h("p", {}, "Process a range of an organization's events again through its current configuration."));
  const f = {
    orgId: h("input", { name: "orgId", required: true }),
    children: h("input", { name: "includeChildren", type: "checkbox" }),
    range: select([["time", "received between two times"], ["seq", "stream sequences"]], "time", { name: "range" }),
    since: h("input", { name: "since", type: "datetime-local" }), until: h("input", { name: "until", type: "datetime-local" }),
    fromSeq: h("input", { name: "fromSeq", type: "number", min: 1 }), toSeq: h("input", { name: "toSeq", type: "number", min: 1 }),
    state: select([["keep", "keep (rules not evaluated again)"], ["fresh", "fresh (rule state reset, rebuilt)"]], "keep", { name: "state" }),
    triggers: h("input", { name: "triggers", type: "checkbox" }),
  };
  const time = h("div", { class: "row" }, field("Since", f.since), field("Until (empty: now)", f.until));
  const seq = h("div", { class: "row" }, field("From sequence", f.fromSeq), field("To sequence (excluded)", f.toSeq));
  const showRange = () => { time.hidden = f.range.value !== "time"; seq.hidden = f.range.value !== "seq"; };
  f.range.addEventListener("change", showRange);
  const confirm = h("div", { id: "replay-confirm" });
  const result = h("div", { id: "replay-result", role: "status" });
  const body = () => {
    const b = { orgId: f.orgId.value.trim(), includeChildren: f.children.checked, state: f.state.value, triggers: f.triggers.checked };
    if (f.range.value === "time") Object.assign(b, { since: iso(f.since.value), until: iso(f.until.value) });
    else Object.assign(b, { fromSeq: f.fromSeq.value ? Number(f.fromSeq.value) : undefined, toSeq: f.toSeq.value ? Number(f.toSeq.value) : undefined });
    return b;
  };
  const report = (r) => h("div", {},
    h("p", { class: "summary" }, `replay ${r.replayId}${r.dryRun ? " (dry run)" : ""}: ${r.events} event(s) of ${r.orgId}, `
      + `state ${r.state}, triggers ${r.triggers ? "re-sent" : "not re-sent"}`
      + (r.processed === undefined ? "" : `, ${r.processed ? "processed" : "not processed yet"}`)),
    r.warning ? h("p", { class: "bad" }, r.warning) : null,
    table(["partition", "events", "first seq", "last seq", "copies"], r.partitions || [], (p, c) =>
      ({ partition: p.partition, events: p.events, "first seq": p.firstSeq, "last seq": p.lastSeq,
        copies: (p.copies || []).join("–") }[c])),
    json(r));
  const form = h("form", { class: "filters", "aria-label": "replay" },
    field("Organization", f.orgId), h("label", { class: "check" }, f.children, "and its child organizations"),
    field("Range", f.range), time, seq, field("Rule state", f.state),
    h("label", { class: "check" }, f.triggers, "send the trigger deliveries again"),
    // a viewer's is marked like every change button; the dry run it sends is refused (403)
    changeButton("Preview replay…", () => {}, { type: "submit" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(result);
    const b = body();
    try {
      const plan = (await api("POST", "/replays" + query({ dryRun: true }), b)).data;
      clear(result).append(report(plan));
      confirmStep(confirm, `Replay ${plan.events} event(s) of ${plan.orgId} (state ${plan.state}, `
        + `triggers ${plan.triggers ? "re-sent" : "not re-sent"})?`, "Confirm replay", async () => {
        try {
          status("replaying…");
          const r = (await api("POST", "/replays" + query({ wait: 30 }), b)).data;
          clear(confirm);
          clear(result).append(report(r));
          status(`replay ${r.replayId}: ${r.events} event(s)`);
        } catch (error) { showError(error, result); }
      });
    } catch (error) { showError(error, result); }
  });
  view.append(form, confirm, result);
  showRange();
}
