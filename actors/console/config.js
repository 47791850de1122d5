// Configuration: every entity kind listed (searchable, paged by the API's cursor), edited as
// its JSON document (validate by dry-run, save with If-Match of the revision loaded, create,
// delete with an in-page confirmation), and each entity's revision history with its diffs and
// a rollback to any earlier revision. The document is the API's, shown and sent as it is: the
// page adds nothing and drops nothing, so what the user sees is what is stored.
import { api, ApiError, query } from "./api.js";
import { changeButton, confirmStep, session, showError } from "./app.js";
import { clear, field, h, json, select, status, table } from "./dom.js";

// slug, kind, list heading, singular (for buttons and headings)
const KINDS = [
  ["organizations", "Organization", "Organizations", "organization"],
  ["data-sources", "DataSource", "Data sources", "data source"],
  ["assets", "Asset", "Assets", "asset"],
  ["route-groups", "RouteGroup", "Route groups", "route group"],
  ["triggers", "Trigger", "Triggers", "trigger"],
  ["asset-templates", "AssetTemplate", "Templates", "template"],
  ["rules", "Rule", "Rules", "rule"],
  ["business-rules", "BusinessRule", "Business rules", "business rule"],
];
const SLUG_OF = Object.fromEntries(KINDS.map(([slug, kind]) => [kind, slug]));
// The screens made for a kind, beside this generic one.
const SPECIAL = { "business-rules": "rule", "asset-templates": "template" };

function kindOf(slug) {
  const found = KINDS.find((k) => k[0] === slug);
  if (!found) throw new Error(`unknown kind ${JSON.stringify(slug)}; one of ${KINDS.map((k) => k[0]).join(", ")}`);
  const [, kind, plural, one] = found;
  return { slug, kind, plural, one };
}

const enc = encodeURIComponent;
const editorHref = (slug, id) => `#/entity/${slug}/${enc(id)}`;
const historyHref = (slug, id) => `#/history/${slug}/${enc(id)}`;

// A minimal valid-looking document of each kind, in the signed-in organization: the user fills
// in the ids; validation names whatever is still missing.
function blank(kind) {
  const org = session.who.orgId || "";
  const base = { kind, id: "", name: "" };
  switch (kind) {
    case "Organization": return { ...base, type: "site", parentId: org, enabled: true };
    case "DataSource": return { ...base, orgId: org, enabled: true, protocol: "http",
      auth: { type: "apiKey", in: "header", name: "X-Api-Key", key: "" }, assetBind: { uuidFields: ["deviceId"] } };
    case "Asset": return { ...base, orgId: org, assetUUID: "", templateId: "", routeGroupIds: [], enabled: true, debugEnabled: false };
    case "RouteGroup": return { ...base, orgId: org, version: 1, enabled: true, routers: [{ kind: "save_event" }] };
    case "Trigger": return { ...base, orgId: org, enabled: true, triggerType: "http",
      config: { http: { endpoint: "https://example.com/hook", method: "POST", timeoutMs: 2000 } } };
    case "AssetTemplate": return { ...base, orgId: org, enabled: true,
      scriptConversion: "result = {eventType: 'reading', eventId: String(Date.now()), data: payload, created: new Date().toISOString()};" };
    case "Rule": return { ...base, orgId: org, parameters: [], variables: [], captureFields: [], actions: [], when: { logic: "AND", items: [] } };
    case "BusinessRule": return { ...base, orgId: org, ruleId: "", enabled: true, timezone: "UTC", parameters: {} };
    default: return base;
  }
}

// ---------------------------------------------------------------- the list
export async function configScreen(view, slug = "assets") {
  let k = kindOf(slug);
  view.append(h("h2", {}, "Configuration"));
  const kindPick = select(KINDS.map(([s, , plural]) => [s, plural]), k.slug, { name: "kind", id: "config-kind" });
  const name = h("input", { name: "name", type: "search" });
  const org = h("input", { name: "orgId" });
  const enabled = select([["", "any"], ["true", "yes"], ["false", "no"]], "", { name: "enabled" });
  const size = h("input", { name: "limit", type: "number", min: 1, max: 1000, value: "50" });
  const form = h("form", { class: "filters", "aria-label": "search the configuration" },
    field("Kind", kindPick), field("Name contains", name), field("Organization (and below)", org),
    field("Enabled", enabled), field("Per page", size), h("button", { type: "submit" }, "Search"));
  const create = h("p", {});
  const out = h("div", { id: "config-list", "aria-live": "polite" });
  view.append(form, create, out);

  let items = [];
  let cursor = null;
  const render = (firstNew) => {
    const more = cursor ? h("button", { type: "button", id: "config-more", onClick: () => page(false) }, "More") : null;
    const tbl = table(["id", "name", "organization", "enabled", "history"], items, (e, c) => {
      if (c === "id") {
        const links = [h("a", { href: editorHref(k.slug, e.id), "data-id": e.id }, e.id)];
        if (SPECIAL[k.slug]) links.push(" ", h("a", { href: `#/${SPECIAL[k.slug]}/${enc(e.id)}`, class: "aside" }, `(${k.one} editor)`));
        return links;
      }
      if (c === "history") return h("a", { href: historyHref(k.slug, e.id), "aria-label": `History of ${e.id}` }, "History");
      return { name: e.name ?? "",
        organization: k.kind === "Organization" ? (e.parentId ? `parent ${e.parentId}` : "(root)") : (e.orgId ?? (e.system ? "(system)" : "")),
        enabled: e.enabled === false ? "no" : "yes" }[c];
    });
    clear(out).append(h("p", { id: "config-count" }, `${items.length} ${k.plural.toLowerCase()} shown${cursor ? "; more follow" : ""}`), tbl);
    if (more) out.append(more);
    if (firstNew !== undefined && items[firstNew]) {
      const link = out.querySelectorAll("tbody tr")[firstNew].querySelector("a");
      if (link) link.focus();
    }
  };
  let asked = 0; // only the newest request's answer is shown (a kind change, then a search)
  const page = async (fresh) => {
    const limit = Math.min(1000, Math.max(1, Number(size.value) || 50));
    const mine = ++asked;
    try {
      const { data } = await api("GET", `/${k.slug}` + query({
        name: name.value.trim(), orgId: org.value.trim(), includeChildren: org.value.trim() ? true : undefined,
        enabled: enabled.value, limit, cursor: fresh ? undefined : cursor,
      }));
      if (mine !== asked) return;
      const before = fresh ? 0 : items.length;
      items = fresh ? data.items : items.concat(data.items);
      cursor = data.nextCursor || null;
      render(fresh ? undefined : before);
    } catch (error) { showError(error, out); }
  };
  const showCreate = () => clear(create).append(h("a", { href: `#/entity/${k.slug}`, class: "button", id: "config-new" }, `New ${k.one}`));
  kindPick.addEventListener("change", () => {
    k = kindOf(kindPick.value);
    // The URL names the kind (a link or a reload comes back to it) without re-rendering the
    // form the user is filling in.
    history.replaceState(null, "", `#/config/${k.slug}`);
    showCreate();
    page(true);
  });
  form.addEventListener("submit", (e) => { e.preventDefault(); page(true); });
  showCreate();
  await page(true);
}

// ---------------------------------------------------------------- the editor
function parseDoc(text, kind) {
  let doc;
  try { doc = JSON.parse(text); } catch (error) { throw new Error(`The document is not JSON: ${error.message}`); }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new Error("The document must be a JSON object.");
  return { kind, ...doc };
}

function issueList(issues) {
  return h("ul", { class: "issues" }, issues.map((i) => h("li", {}, h("code", {}, i.path || "(document)"), `: ${i.reason}`)));
}

export async function entityEditor(view, slug, id) {
  const k = kindOf(slug);
  const fresh = id === undefined || id === "";
  const path = fresh ? `/${k.slug}` : `/${k.slug}/${enc(id)}`;
  let loaded = fresh ? { doc: blank(k.kind), revision: null } : null;

  const heading = h("h2", {}, fresh ? `New ${k.one}` : `${k.kind} ${id}`);
  const links = h("p", { class: "links" }, h("a", { href: `#/config/${k.slug}` }, `← ${k.plural}`));
  if (!fresh) {
    links.append(" · ", h("a", { href: historyHref(k.slug, id), id: "entity-history" }, "History"));
    if (SPECIAL[k.slug]) links.append(" · ", h("a", { href: `#/${SPECIAL[k.slug]}/${enc(id)}` }, `Open in the ${k.one} editor`));
  }
  const revision = h("p", { id: "entity-revision" });
  const area = h("textarea", { id: "entity-json", rows: 20, spellcheck: "false", wrap: "off", class: "doc-text" });
  const out = h("div", { id: "entity-result", role: "status" });
  const confirmBox = h("div", { id: "delete-confirm" });
  view.append(heading, links, revision,
    field(`${k.kind} document (JSON)`, area, fresh
      ? "Fill in the id and the fields; Validate checks it without writing."
      : "The whole document: Save replaces it. Secrets read <redacted>; left so, they keep the stored value."),
    out);

  const show = (data, etag) => {
    loaded = { doc: data, revision: etag ? etag.replace(/^W\//, "").replace(/"/g, "") : null };
    area.value = JSON.stringify(data, null, 2);
    area.rows = Math.min(30, Math.max(8, area.value.split("\n").length + 1));
    revision.textContent = loaded.revision ? `Revision ${loaded.revision} loaded.` : "";
  };
  const reload = async () => {
    const r = await api("GET", path);
    show(r.data, r.etag);
  };
  if (fresh) show(loaded.doc, null);
  else {
    try { await reload(); } catch (error) {
      // A deleted entity keeps its history, where a rollback brings it back.
      if (error instanceof ApiError && error.status === 404) {
        view.append(h("p", {}, "If it was deleted, its ", h("a", { href: historyHref(k.slug, id) }, "history"), " can bring it back."));
      }
      throw error;
    }
  }

  const current = () => {
    try { return parseDoc(area.value, k.kind); } catch (error) { showError(error, out); return null; }
  };

  const validate = changeButton("Validate", async () => {
    const doc = current();
    if (!doc) return;
    try {
      const { data } = await api("POST", "/dry-run", { documents: [doc] });
      if (data.valid) { clear(out).append(h("p", { class: "ok" }, "Valid: no problems found (nothing was written).")); status("valid"); return; }
      clear(out).append(h("div", { class: "error", role: "alert" },
        h("p", {}, `${data.issues.length} problem(s):`), issueList(data.issues)));
      status(`${data.issues.length} problem(s)`, "error");
    } catch (error) { showError(error, out); }
  }, { id: "entity-validate" });

  const conflict = (error) => {
    const now = error.body && error.body.revision;
    const reloadButton = h("button", { type: "button", id: "entity-reload", onClick: async () => {
      try { await reload(); clear(out).append(h("p", {}, `Reloaded revision ${loaded.revision}: the stored version, with their change.`)); status("reloaded"); area.focus(); } catch (e) { showError(e, out); }
    } }, "Reload the stored version");
    clear(out).append(h("div", { class: "error conflict", role: "alert" },
      h("p", {}, `412: someone else changed this ${k.one} since you loaded revision ${loaded.revision}${now ? ` (it is now at revision ${now})` : ""}. Nothing was saved. `
        + "Reload to see their version (your edits here are replaced: copy them first if you need them), then make your change again."),
      reloadButton));
    status("not saved: changed by someone else", "error");
  };

  const save = changeButton(fresh ? "Create" : "Save", async () => {
    const doc = current();
    if (!doc) return;
    if (fresh) {
      try {
        const r = await api("POST", path, doc);
        status(`created ${k.one} ${r.data.entity.id} (configuration revision ${r.data.storeRevision})`);
        location.hash = editorHref(k.slug, r.data.entity.id);
      } catch (error) { showError(error, out); }
      return;
    }
    if (JSON.stringify(doc) === JSON.stringify({ kind: k.kind, ...loaded.doc })) {
      clear(out).append(h("p", {}, "Nothing changed: nothing saved."));
      status("nothing to save");
      return;
    }
    try {
      const r = await api("PUT", path, doc, { headers: { "If-Match": `"${loaded.revision}"` } });
      await reload();
      clear(out).append(h("p", {}, `Saved: revision ${loaded.revision} (configuration revision ${r.data.storeRevision}).`));
      status("saved");
    } catch (error) {
      if (error instanceof ApiError && error.status === 412) conflict(error);
      else showError(error, out);
    }
  }, { id: fresh ? "entity-create" : "entity-save" });

  const actions = h("div", { class: "actions" }, validate, save);
  if (!fresh) {
    const del = changeButton("Delete…", () => askDelete(), { id: "entity-delete" });
    actions.append(del);
    const askDelete = () => confirmStep(confirmBox,
      `Delete ${k.one} ${id}? It stops being used at once; its history stays, and a rollback there brings it back.`,
      `Yes, delete ${id}`, async () => {
        try {
          const r = await api("DELETE", path, undefined, { headers: { "If-Match": `"${loaded.revision}"` } });
          // The page stays, without its change buttons: the history (and a rollback there)
          // is one link away.
          clear(confirmBox);
          actions.remove();
          area.readOnly = true;
          revision.textContent = "Deleted.";
          clear(out).append(h("p", { id: "entity-deleted" }, `Deleted ${k.one} ${id} (configuration revision ${r.data.storeRevision}). `,
            "Its ", h("a", { href: historyHref(k.slug, id) }, "history"), " keeps every revision; back to ",
            h("a", { href: `#/config/${k.slug}` }, k.plural), "."));
          status(`deleted ${k.one} ${id}`);
        } catch (error) {
          clear(confirmBox);
          if (error instanceof ApiError && error.status === 409 && error.body && error.body.referrers) refused(error);
          else if (error instanceof ApiError && error.status === 412) conflict(error);
          else showError(error, out);
        }
      }, { danger: true, returnTo: del });
  }
  const refused = (error) => {
    const referrers = error.body.referrers || [];
    const hidden = error.body.hiddenReferrers || 0;
    clear(out).append(h("div", { class: "error", role: "alert", id: "delete-refused" },
      h("p", {}, `409: ${error.message}`),
      h("p", {}, "Change or delete these first:"),
      h("ul", { class: "referrers" }, referrers.map((r) => h("li", {},
        SLUG_OF[r.kind] ? h("a", { href: editorHref(SLUG_OF[r.kind], r.id) }, `${r.kind} ${r.id}`) : `${r.kind} ${r.id}`,
        r.path ? [" (", h("code", {}, r.path), ")"] : null))),
      hidden ? h("p", {}, `and ${hidden} outside this token's scope`) : null));
    status("not deleted: still used", "error");
  };
  view.insertBefore(actions, out);
  view.insertBefore(confirmBox, out);
}

// ---------------------------------------------------------------- history
function value(v) {
  if (v === undefined) return "";
  if (v && typeof v === "object") return json(v);
  return h("code", {}, JSON.stringify(v));
}

export async function historyScreen(view, slug, id) {
  const k = kindOf(slug);
  view.append(h("h2", {}, `History of ${k.one} ${id}`),
    h("p", { class: "links" }, h("a", { href: editorHref(k.slug, id) }, `← ${k.kind} ${id}`), " · ",
      h("a", { href: `#/config/${k.slug}` }, k.plural)));
  const result = h("div", { id: "history-result", role: "status" });
  const out = h("div", { id: "history" });
  view.append(result, out);
  const load = async () => {
    const { data } = await api("GET", `/${k.slug}/${enc(id)}/history`);
    const items = data.items || [];
    const latest = items.length ? items[items.length - 1].revision : null;
    clear(out).append(h("p", {}, `${items.length} revision(s), newest first.`),
      h("ol", { class: "history", reversed: true }, items.slice().reverse().map((c) => {
        const who = c.author ? (c.author.name || c.author.id) : "?";
        const box = h("section", { class: "card revision", "aria-label": `revision ${c.revision}`, "data-revision": c.revision },
          h("h3", {}, `Revision ${c.revision} · ${c.op}${c.revision === latest ? " (current)" : ""}`),
          h("p", {}, `${c.at} by ${who}${c.note ? ` · ${c.note}` : ""} · configuration revision ${c.storeRevision}`),
          table(["field", "change", "before", "after"], c.diff || [], (d, col) => ({
            field: h("code", {}, d.path || "(whole document)"), change: d.op, before: value(d.from), after: value(d.to),
          }[col])),
          c.after ? h("details", {}, h("summary", {}, `Document after revision ${c.revision}`), json(c.after))
            : h("p", {}, "Deleted at this revision."));
        if (c.revision !== latest) {
          box.append(h("div", { class: "actions" }, changeButton("Roll back to this revision", async () => {
            try {
              const r = await api("POST", `/${k.slug}/${enc(id)}/rollback`, { revision: c.revision });
              await load();
              clear(result).append(h("p", {}, `Rolled back to revision ${c.revision} (a new change; configuration revision ${r.data.storeRevision}).`));
              status(`rolled back to revision ${c.revision}`);
            } catch (error) { showError(error, result); }
          }, { "aria-label": `Roll back to revision ${c.revision}` })));
        }
        return h("li", {}, box);
      })));
  };
  await load();
}
