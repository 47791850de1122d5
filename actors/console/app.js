// The console's shell: sign-in, navigation by URL hash, and what every screen shares (the
// viewer-aware change button, error display). Each screen lives in its own module: overview,
// rules (and builder), templates, explore (Events, Logs, DLQ, Replays), access (Tokens,
// Secrets), config (Configuration, History).
import { api, ApiError, setToken, token } from "./api.js";
import { clear, h, status } from "./dom.js";
import { overviewScreen } from "./overview.js";
import { rulesScreen, ruleAloneEditor, ruleEditor } from "./rules.js";
import { templatesScreen, templateEditor } from "./templates.js";
import { dlqScreen, eventsScreen, logsScreen, replaysScreen, storyScreen } from "./explore.js";
import { secretsScreen, tokensScreen } from "./access.js";
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

// An in-page confirmation (never window.confirm), drawn into `where`: the question, a confirm
// button (a change button: a viewer's is marked, and the API decides) and Cancel. Cancel or
// Escape takes it back (`onCancel`; by default: empty `where`, focus `returnTo`); the confirm
// button is off while its action runs. The group is named by the question.
export function confirmStep(where, question, confirmLabel, onConfirm,
  { danger = false, returnTo = null, onCancel = null } = {}) {
  const cancel = onCancel || (() => { clear(where); if (returnTo) returnTo.focus(); });
  const yes = changeButton(confirmLabel, async () => {
    yes.disabled = true;
    try { await onConfirm(); } finally { yes.disabled = false; }
  }, danger ? { class: "danger" } : {});
  const box = h("div", { class: "confirm", role: "group", "aria-label": question,
    onKeydown: (e) => { if (e.key === "Escape") cancel(); } },
  h("p", {}, question), h("div", { class: "actions" }, yes, h("button", { type: "button", onClick: cancel }, "Cancel")));
  clear(where).append(box);
  yes.focus();
  return box;
}

export function showError(error, where) {
  const text = error instanceof ApiError ? error.describe() : String(error.message || error);
  status(text, "error");
  if (where) { clear(where).append(h("pre", { class: "error", role: "alert" }, text)); }
}

// A screen may return a function that stops what it started (the Overview's polling).
let stopScreen = null;
function stopPolling() { if (stopScreen) stopScreen(); stopScreen = null; }

const screens = {
  overview: overviewScreen,
  rules: rulesScreen,
  "rule": ruleEditor,
  "rule-only": ruleAloneEditor,
  templates: templatesScreen,
  "template": templateEditor,
  events: eventsScreen,
  story: storyScreen,
  dlq: dlqScreen,
  logs: logsScreen,
  replays: replaysScreen,
  tokens: tokensScreen,
  secrets: secretsScreen,
  config: configScreen, entity: entityEditor, history: historyScreen,
};

let routed = 0; // the newest navigation: an older one finishing late must not take the focus

async function route() {
  stopPolling();
  const mine = ++routed;
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
    const stop = await screen(pane, ...rest.map(decodeURIComponent));
    // A screen left while it loaded stops at once what it started (the Overview's polling).
    if (typeof stop === "function") { if (pane.isConnected) stopScreen = stop; else stop(); }
  } catch (error) {
    if (mine === routed) showError(error, pane.appendChild(h("div")));
  }
  if (mine === routed) view.focus({ preventScroll: true });
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
  // Screens a role can do nothing on are not offered (the API refuses them anyway):
  // Replays needs an editor, Tokens an admin.
  const rank = { ingest: 0, viewer: 1, editor: 2, admin: 3 };
  for (const a of document.querySelectorAll("#nav a[data-min-role]")) {
    a.hidden = (rank[session.who.role] ?? 0) < rank[a.dataset.minRole];
  }
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

start();
