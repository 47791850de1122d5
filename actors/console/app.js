// The console's shell: sign-in, navigation by URL hash, and the Overview, Events and DLQ
// screens. Rules and Templates live in their own modules.
import { api, ApiError, query, setToken, token } from "./api.js";
import { clear, field, h, json, select, status, table } from "./dom.js";
import { rulesScreen, ruleEditor } from "./rules.js";
import { templatesScreen, templateEditor } from "./templates.js";
import { configScreen, entityEditor, historyScreen } from "./config.js";

export const session = { who: null };

// A viewer's change controls stay focusable and say why they are off; a click still goes to
// the API, whose 403 is shown, so the refusal is the server's, not only the page's.
export function changeButton(text, onClick, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, text);
  if (session.who && session.who.role === "viewer") {
    b.setAttribute("aria-disabled", "true");
    b.classList.add("locked");
    b.title = "your role (viewer) cannot change anything";
  }
  b.addEventListener("click", onClick);
  return b;
}

export function showError(error, where) {
  const text = error instanceof ApiError ? error.describe() : String(error.message || error);
  status(text, "error");
  if (where) { clear(where).append(h("pre", { class: "error", role: "alert" }, text)); }
}

let timer = null;
function stopPolling() { if (timer) clearInterval(timer); timer = null; }

const screens = {
  overview: overviewScreen,
  rules: rulesScreen,
  "rule": ruleEditor,
  templates: templatesScreen,
  "template": templateEditor,
  events: eventsScreen,
  story: storyScreen,
  dlq: dlqScreen,
  config: configScreen, entity: entityEditor, history: historyScreen,
};

async function route() {
  stopPolling();
  const view = document.getElementById("view");
  if (!token() || !session.who) return;
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const screen = screens[name] || overviewScreen;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clear(view);
  status("");
  // Each screen draws into its own pane: one still loading when the user moves on writes
  // into a detached pane, not under the next screen.
  const pane = view.appendChild(h("div", { class: "screen" }));
  try {
    await screen(pane, ...rest.map(decodeURIComponent));
  } catch (error) {
    showError(error, pane.appendChild(h("div")));
  }
  view.focus({ preventScroll: true });
}

async function signIn(value) {
  setToken(value);
  try {
    session.who = (await api("GET", "/whoami")).data;
  } catch (error) {
    setToken(null);
    session.who = null;
    throw error;
  }
  const who = document.getElementById("who");
  clear(who).append(
    h("span", { id: "whoami" }, `${session.who.name || session.who.tokenId} · org ${session.who.orgId ?? "(all)"} · ${session.who.role}`),
    h("button", { type: "button", onClick: signOut }, "Sign out"));
  document.body.dataset.role = session.who.role;
  document.getElementById("nav").hidden = false;
  document.getElementById("signin").hidden = true;
}

function signOut() {
  setToken(null);
  location.hash = "";
  location.reload();
}

function showSignIn() {
  const view = document.getElementById("view");
  const form = document.getElementById("signin") || view.appendChild(h("form", { id: "signin" }));
  form.hidden = false;
  form.querySelector("input").focus();
}

async function start() {
  const form = document.getElementById("signin");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn(form.token.value.trim());
      form.remove();
      await route();
    } catch (error) {
      showError(error);
    }
  });
  window.addEventListener("hashchange", route);
  if (token()) {
    try { await signIn(token()); form.remove(); await route(); return; } catch (error) { showError(error); }
  }
  showSignIn();
}

// ---------------------------------------------------------------- Overview
const WINDOW_MIN = 10;

function bars(values, label) {
  const w = 300, hgt = 60, max = Math.max(1, ...values), step = w / values.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.classList.add("chart");
  values.forEach((v, i) => {
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const bh = (v / max) * (hgt - 4);
    r.setAttribute("x", String(i * step + 1));
    r.setAttribute("y", String(hgt - bh));
    r.setAttribute("width", String(Math.max(1, step - 2)));
    r.setAttribute("height", String(bh));
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = String(v);
    r.append(t);
    svg.append(r);
  });
  return svg;
}

async function orgHealth(org) {
  const since = new Date(Date.now() - WINDOW_MIN * 60000).toISOString();
  const scope = { orgId: org.id, includeChildren: true };
  const [events, dlq, triggers] = await Promise.all([
    api("GET", "/events" + query({ ...scope, since, limit: 10000 })),
    api("GET", "/dlq" + query({ orgId: org.id, redriven: "no", limit: 1000 })),
    api("GET", "/logs/triggers" + query({ ...scope, since, limit: 10000 })).catch(() => ({ data: { rows: [] } })),
  ]);
  const perMinute = new Array(WINDOW_MIN).fill(0);
  let newest = 0;
  for (const row of events.data.rows || []) {
    const t = Date.parse(row.created);
    newest = Math.max(newest, t);
    const slot = WINDOW_MIN - 1 - Math.floor((Date.now() - t) / 60000);
    if (slot >= 0 && slot < WINDOW_MIN) perMinute[slot] += 1;
  }
  const trig = { ok: 0, failed: 0 };
  for (const row of triggers.data.rows || []) (row.success === false || row.error ? trig.failed++ : trig.ok++);
  return { perMinute, newest, dlq: (dlq.data.items || []).length, trig };
}

async function overviewScreen(view) {
  view.append(h("h2", {}, "Overview"),
    h("p", {}, `Per organization (with its children), the last ${WINDOW_MIN} minutes, refreshed every 5 s.`));
  // The token's organization and its children (each card covers its subtree): a bounded
  // number of polls however deep the tree is.
  const own = session.who.orgId;
  const orgs = (await api("GET", "/organizations" + query({ limit: 1000 }))).data.items
    .filter((o) => (own ? o.id === own || o.parentId === own : !o.parentId || o.depth <= 1)).slice(0, 12);
  const grid = view.appendChild(h("div", { class: "grid" }));
  const cards = orgs.map((org) => {
    const card = h("section", { class: "card", "aria-label": `organization ${org.id}` }, h("h3", {}, org.name || org.id));
    grid.append(card);
    return [org, card];
  });
  const refresh = async () => {
    for (const [org, card] of cards) {
      try {
        const m = await orgHealth(org);
        const total = m.perMinute.reduce((a, b) => a + b, 0);
        const age = m.newest ? `${Math.round((Date.now() - m.newest) / 1000)} s` : "no events";
        clear(card).append(h("h3", {}, org.name || org.id),
          bars(m.perMinute, `events per minute, ${org.id}`),
          h("dl", {},
            h("dt", {}, "throughput"), h("dd", {}, `${(total / WINDOW_MIN).toFixed(1)} events/min`),
            h("dt", {}, "lag (age of the newest stored event)"), h("dd", {}, age),
            h("dt", {}, "DLQ (not redriven)"), h("dd", { class: m.dlq ? "bad" : "" }, String(m.dlq)),
            h("dt", {}, "trigger deliveries"), h("dd", { class: m.trig.failed ? "bad" : "" }, `${m.trig.ok} ok, ${m.trig.failed} failed`)));
      } catch (error) {
        clear(card).append(h("h3", {}, org.id), h("p", { class: "error" }, String(error.message)));
      }
    }
  };
  await refresh();
  if (view.isConnected) timer = setInterval(refresh, 5000); // not for a screen left meanwhile
}

// ---------------------------------------------------------------- Events
async function eventsScreen(view) {
  view.append(h("h2", {}, "Events"));
  const f = {
    orgId: h("input", { name: "orgId" }), assetId: h("input", { name: "assetId" }),
    eventType: h("input", { name: "eventType" }),
    since: h("input", { name: "since", type: "datetime-local" }), until: h("input", { name: "until", type: "datetime-local" }),
    where: h("textarea", { name: "where", rows: 2, placeholder: "temperature > -15" }),
  };
  const results = h("div", { id: "event-results" });
  const form = h("form", { class: "filters", "aria-label": "event filters" },
    field("Organization", f.orgId), field("Asset", f.assetId), field("Event type", f.eventType),
    field("Since", f.since), field("Until", f.until),
    field("EVA filters (one per line)", f.where, "FIELD OP VALUE; OP one of = != > >= < <="),
    h("button", { type: "submit" }, "Search"));
  const tracker = h("input", { name: "tracker", id: "tracker" });
  const storyForm = h("form", { class: "filters", "aria-label": "find an event" },
    field("Event tracker id", tracker), h("button", { type: "submit" }, "Show story"));
  storyForm.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/story/${encodeURIComponent(tracker.value.trim())}`; });
  const iso = (v) => (v ? new Date(v).toISOString() : undefined);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const { data } = await api("GET", "/events" + query({
        orgId: f.orgId.value, includeChildren: f.orgId.value ? true : undefined, assetId: f.assetId.value,
        eventType: f.eventType.value, since: iso(f.since.value), until: iso(f.until.value),
        where: f.where.value.split("\n").map((s) => s.trim()), limit: 100, newestFirst: true,
      }));
      const rows = data.rows || [];
      clear(results).append(h("p", {}, `${rows.length} event(s)${data.nextCursor ? " (more)" : ""}`),
        table(["created", "org", "asset", "type", "tracker id", "payload"], rows, (r, c) => {
          if (c === "tracker id") return h("a", { href: `#/story/${encodeURIComponent(r.event_tracker_id)}` }, r.event_tracker_id);
          return { created: r.created, org: r.org_id, asset: r.asset_id, type: r.event_type,
            payload: JSON.stringify(r.payload).slice(0, 120) }[c];
        }));
    } catch (error) { showError(error, results); }
  });
  view.append(storyForm, form, results);
}

async function storyScreen(view, tracker) {
  view.append(h("h2", {}, "Event story"), h("p", {}, h("a", { href: "#/events" }, "← Events")));
  const { data } = await api("GET", `/events/${encodeURIComponent(tracker)}/story`);
  view.append(h("p", { id: "story-tracker" }, `eventTrackerId ${tracker}`));
  view.append(h("h3", {}, "Summary"), json(data.summary), h("h3", {}, `Steps${data.truncated ? " (truncated)" : ""}`));
  const steps = data.steps || [];
  view.append(h("ol", { class: "story" }, steps.map((s) =>
    h("li", {}, h("strong", {}, s.kind), " ", s.at, json(s.record)))));
}

// ---------------------------------------------------------------- DLQ
async function dlqScreen(view) {
  view.append(h("h2", {}, "Dead-letter queue"));
  const which = select([["no", "not redriven"], ["yes", "redriven"], ["all", "all"]], "no", { id: "dlq-which" });
  const out = h("div", { id: "dlq-results" });
  const result = h("div", { id: "redrive-result", role: "status" });
  const load = async () => {
    try {
      const { data } = await api("GET", "/dlq" + query({ redriven: which.value, limit: 200 }));
      const items = data.items || [];
      clear(out).append(h("p", {}, `${items.length} entr${items.length === 1 ? "y" : "ies"}`),
        table(["made", "org", "stage", "error", "tracker id", ""], items, (e, c) => {
          const id = e.eventTrackerId;
          if (c === "") {
            return changeButton("Redrive", async () => {
              try {
                const r = await api("POST", "/dlq/redrive" + query({ wait: 10 }), { eventTrackerId: id });
                clear(result).append(h("p", {}, `redrive of ${id}:`), json(r.data.summary));
                status(`redriven: ${id}`);
                await load();
              } catch (error) { showError(error, result); }
            }, { "aria-label": `Redrive ${id}` });
          }
          if (c === "tracker id") return h("a", { href: `#/story/${encodeURIComponent(id)}` }, id);
          return { made: e.created, org: e.orgId, stage: e.stage, error: typeof e.error === "string" ? e.error : JSON.stringify(e.error) }[c];
        }));
    } catch (error) { showError(error, out); }
  };
  which.addEventListener("change", load);
  view.append(field("Show", which), result, out);
  await load();
}

start();
