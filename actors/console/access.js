// Access: API tokens and secrets. Both are write-once from the page's side: a new token's
// value is shown once (the API keeps only its hash), and a secret's value is sent and the field
// cleared; the API never returns it, so the page never has it to show.
import { api, query } from "./api.js";
import { changeButton, confirmStep, session, showError } from "./app.js";
import { clear, field, h, select, status } from "./dom.js";

const ROLES = ["ingest", "viewer", "editor", "admin"];

// The organizations of the token's scope, parents before children, as [id, label] options.
async function orgOptions() {
  const items = (await api("GET", "/organizations" + query({ limit: 1000 }))).data.items || [];
  items.sort((a, b) => String(a.pathKey || a.id).localeCompare(String(b.pathKey || b.id)));
  return items.map((o) => [o.id, `${"\u00a0\u00a0".repeat(o.depth || 0)}${o.name || o.id} (${o.id})`]);
}

const when = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, " UTC") : "");

// The row's button gives its place to the shared confirmation; Cancel or Escape puts it back.
function confirmIn(button, question, confirmText, onConfirm) {
  const holder = h("div");
  button.replaceWith(holder);
  return confirmStep(holder, question, confirmText, onConfirm, { danger: true,
    onCancel: () => { holder.replaceWith(button); button.focus(); } });
}

// ---------------------------------------------------------------- Tokens
export async function tokensScreen(view) {
  view.append(h("h2", {}, "Tokens"),
    h("p", {}, "API tokens of your organization and below. Only admins list, create and revoke "
      + "them; the API keeps a token's SHA-256, never its value."));
  const f = {
    orgId: select(await orgOptions(), session.who.orgId, { name: "orgId" }),
    role: select(ROLES, "ingest", { name: "role" }),
    name: h("input", { name: "name", autocomplete: "off", placeholder: "role@organization" }),
    days: h("input", { name: "expiresDays", type: "number", min: "0.01", step: "any", placeholder: "never" }),
  };
  const issued = h("div", { id: "token-issued" });
  const result = h("div", { id: "token-result", role: "status" });
  const list = h("div", { id: "token-list" });
  // A submit button, so Enter in any field creates; a viewer's click is sent and refused too.
  const create = changeButton("Create token", () => {}, { type: "submit", id: "create-token" });
  const run = async () => {
    const body = { orgId: f.orgId.value, role: f.role.value, name: f.name.value.trim() };
    if (f.days.value.trim()) body.expiresDays = Number(f.days.value);
    try {
      const { data } = await api("POST", "/tokens", body);
      clear(result);
      showIssued(issued, data);
      f.name.value = "";
      status(`token ${data.name} (${data.id}) created`);
      await load();
    } catch (error) { showError(error, result); }
  };
  const form = h("form", { class: "card", "aria-label": "new token" }, h("h3", {}, "New token"),
    h("div", { class: "row" }, field("Organization", f.orgId), field("Role", f.role),
      field("Token name", f.name), field("Expires in days", f.days, "empty: never")),
    h("div", { class: "actions" }, create));
  form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
  const load = async () => {
    try {
      const { data } = await api("GET", "/tokens");
      clear(list).append(tokenTable(data.items || [], load, result));
    } catch (error) { showError(error, list); }
  };
  view.append(form, result, issued, h("h3", {}, "Tokens"), list);
  await load();
}

function showIssued(where, data) {
  const value = h("input", { id: "new-token-value", readonly: true, class: "secret-value",
    autocomplete: "off", spellcheck: "false", value: data.token });
  const note = h("p", { role: "status" });
  const copy = h("button", { type: "button" }, "Copy");
  copy.addEventListener("click", async () => {
    value.select();
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(value.value);
      note.textContent = "Copied to the clipboard.";
    } catch {
      note.textContent = "The browser refused the clipboard: the value is selected, press Ctrl+C.";
    }
  });
  // Done drops the only copy the page has: the value is never kept anywhere else.
  const done = h("button", { type: "button" }, "Done, hide it");
  done.addEventListener("click", () => { clear(where); status("the new token's value is gone from the page"); });
  clear(where).append(h("section", { class: "card issued", "aria-label": "the new token, shown once" },
    h("h3", {}, `New token ${data.name} (${data.role} of ${data.orgId})`),
    h("p", { class: "warn" }, "Copy it now: it will not be shown again. The API keeps only its hash."),
    h("div", { class: "row" }, field("New token value", value), copy, done), note));
  value.focus();
  value.select();
}

function tokenTable(items, reload, result) {
  if (!items.length) return h("p", {}, "No tokens in your scope.");
  const cols = ["name", "id", "organization", "role", "created", "expires", "revoked", "state", ""];
  const me = session.who.tokenId;
  return h("table", { class: "tokens" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((t) => {
      const own = t.id === me;
      const state = t.revoked ? "revoked" : (t.active ? "active" : "expired");
      const action = h("td", {});
      if (!t.revoked) {
        const label = `Revoke ${t.name} (${t.id})`;
        const revoke = changeButton("Revoke", () => {
          const question = own
            ? `Revoke ${t.name}, the token you are signed in with? This tab stops working.`
            : `Revoke ${t.name}? It fails from its next request, for good.`;
          confirmIn(revoke, question, "Confirm revoke", async () => {
            try {
              await api("DELETE", `/tokens/${encodeURIComponent(t.id)}`);
              status(`token ${t.name} (${t.id}) revoked`);
              if (own) { location.reload(); return; }
              await reload();
            } catch (error) { showError(error, result); }
          });
        }, { "aria-label": label });
        action.append(revoke);
      }
      return h("tr", { class: own ? "own" : "", "data-token-id": t.id },
        h("td", {}, t.name, own ? h("span", { class: "you", title: "the token this tab is signed in with" }, " (you)") : null),
        h("td", {}, h("code", {}, t.id)), h("td", {}, t.orgId), h("td", {}, t.role),
        h("td", {}, when(t.created)), h("td", {}, t.expires ? when(t.expires) : "never"),
        h("td", {}, when(t.revoked)), h("td", { class: state === "active" ? "" : "bad" }, state), action);
    })));
}

// ---------------------------------------------------------------- Secrets
export async function secretsScreen(view) {
  view.append(h("h2", {}, "Secrets"),
    h("p", {}, "Values that triggers render as {{secrets.NAME}}. A value is write-only: it is "
      + "sent, sealed by the stack and never shown again, here or by the API."));
  const f = {
    orgId: select(await orgOptions(), session.who.orgId, { name: "orgId" }),
    name: h("input", { name: "name", autocomplete: "off", placeholder: "SLACK_WEBHOOK" }),
    // new-password: no browser offers to fill or remember it; the page keeps no copy.
    value: h("input", { name: "value", type: "password", autocomplete: "new-password" }),
    shared: h("input", { name: "shared", type: "checkbox" }),
  };
  const result = h("div", { id: "secret-result", role: "status" });
  const list = h("div", { id: "secret-list" });
  const log = h("div", { id: "secret-changes" });
  const save = changeButton("Save secret", () => {}, { type: "submit", id: "save-secret" });
  const run = async () => {
    const orgId = f.orgId.value, name = f.name.value.trim(), value = f.value.value;
    f.value.value = "";  // cleared before the answer: the value lives only in the request
    try {
      const { data } = await api("PUT", `/secrets/${encodeURIComponent(orgId)}/${encodeURIComponent(name)}`,
        { value, shared: f.shared.checked });
      clear(result).append(h("p", {}, `secret ${data.name} of ${data.orgId} ${data.created ? "created" : "replaced"}`));
      status(`secret ${data.name} saved`);
      await load();
    } catch (error) { showError(error, result); }
  };
  const form = h("form", { class: "card", "aria-label": "set a secret" }, h("h3", {}, "Set or replace a secret"),
    h("div", { class: "row" }, field("Organization", f.orgId),
      field("Secret name", f.name, "letters, digits and _"),
      field("Secret value", f.value, "write-only: cleared once sent"),
      h("label", { class: "check" }, f.shared, "Shared with child organizations")),
    h("div", { class: "actions" }, save));
  form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
  const replace = (s) => {
    f.orgId.value = s.orgId;
    f.name.value = s.name;
    f.shared.checked = !!s.shared;
    f.value.focus();
    status(`type the new value of ${s.name} (${s.orgId}), then Save secret`);
  };
  const load = async () => {
    try {
      const [secrets, changes] = await Promise.all([api("GET", "/secrets"), api("GET", "/secrets/changes")]);
      clear(list).append(secretGroups(secrets.data.items || [], replace, load, result));
      clear(log).append(changeTable(changes.data.items || []));
    } catch (error) { showError(error, list); }
  };
  view.append(form, result, h("h3", {}, "Secrets by organization"), list,
    h("h3", {}, "Change log (newest first)"), log);
  await load();
}

function secretGroups(items, replace, reload, result) {
  if (!items.length) return h("p", {}, "No secrets in your scope.");
  const byOrg = new Map();
  for (const s of items) (byOrg.get(s.orgId) || byOrg.set(s.orgId, []).get(s.orgId)).push(s);
  const cols = ["name", "shared", "updated", "updated by", ""];
  return h("div", {}, [...byOrg.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([org, rows]) =>
    h("section", { class: "secrets", "aria-label": `secrets of ${org}` },
      h("h4", {}, org, rows[0].orphaned ? " (organization deleted)" : ""),
      h("table", {},
        h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.sort((a, b) => a.name.localeCompare(b.name)).map((s) => {
          const action = h("td", {});
          const del = changeButton("Delete", () => confirmIn(del,
            `Delete ${s.name} of ${s.orgId}? Triggers stop rendering it.`, "Confirm delete", async () => {
              try {
                await api("DELETE", `/secrets/${encodeURIComponent(s.orgId)}/${encodeURIComponent(s.name)}`);
                status(`secret ${s.name} of ${s.orgId} deleted`);
                await reload();
              } catch (error) { showError(error, result); }
            }), { "aria-label": `Delete ${s.name} of ${s.orgId}` });
          action.append(changeButton("Replace", () => replace(s), { "aria-label": `Replace ${s.name} of ${s.orgId}` }), " ", del);
          return h("tr", { "data-secret": `${s.orgId}/${s.name}` },
            h("td", {}, h("code", {}, s.name)), h("td", {}, s.shared ? "yes" : "no"),
            h("td", {}, when(s.updated)), h("td", {}, `${s.updatedBy.name} (${s.updatedBy.id})`), action);
        }))))));
}

function changeTable(items) {
  if (!items.length) return h("p", {}, "No changes yet.");
  const rows = items.slice(-50).reverse();
  const cols = ["at", "organization", "name", "change", "by"];
  return h("div", {}, items.length > 50 ? h("p", {}, `the last 50 of ${items.length}`) : null,
    h("table", {},
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((c) => h("tr", {},
        h("td", {}, when(c.at)), h("td", {}, c.orgId), h("td", {}, h("code", {}, c.name)),
        h("td", {}, c.op === "set" ? (c.created ? "created" : "replaced") : c.op),
        h("td", {}, `${c.author.name} (${c.author.id})`))))));
}
