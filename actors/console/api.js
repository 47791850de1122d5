// The management API, with the token this tab signed in with (sessionStorage: never shared
// with another tab, gone when the tab closes).
const KEY = "eventray.token";
export const PREFIX = "/api/v1/manage";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.issues = (body && body.issues) || [];
    this.body = body || {}; // e.g. a 409's referrers, a 412's current revision
  }
  describe() {
    const lines = this.issues.map((i) => `${i.path || "(body)"}: ${i.reason}`);
    return [`${this.status}: ${this.message}`, ...lines].join("\n");
  }
}

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY));

export async function api(method, path, body, { headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  const t = token();
  if (t) init.headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(PREFIX + path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, etag: response.headers.get("ETag") };
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => x && q.append(k, x));
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
