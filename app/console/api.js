// The admin API over fetch. The bearer token lives in sessionStorage (this tab only) and is sent
// in the Authorization header: the console uses no cookie, so a forged cross-site request carries
// nothing that would authenticate it (CSRF-safe by construction). A 401 is answered by spending
// the refresh token once (one refresh at a time) and retrying; when that fails the session ends.

const PREFIX = "/api/v1";
const ACCESS = "dispatchFarm.console.accessToken";
const REFRESH = "dispatchFarm.console.refreshToken";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? null;
  }

  get reason() {
    return this.details && typeof this.details === "object" ? this.details.reason : undefined;
  }
}

const signedOut = new Set();
let refreshing = null;

export function onSignedOut(listener) {
  signedOut.add(listener);
  return () => signedOut.delete(listener);
}

export function accessToken() {
  return sessionStorage.getItem(ACCESS);
}

export function hasSession() {
  return Boolean(sessionStorage.getItem(ACCESS) && sessionStorage.getItem(REFRESH));
}

function keep(tokens) {
  sessionStorage.setItem(ACCESS, tokens.accessToken);
  sessionStorage.setItem(REFRESH, tokens.refreshToken);
}

function forget() {
  sessionStorage.removeItem(ACCESS);
  sessionStorage.removeItem(REFRESH);
}

function endSession() {
  const had = hasSession();
  forget();
  if (had) signedOut.forEach((listener) => listener());
}

/** `{a: 1, b: ""}` → "?a=1" (empty values are left out). */
export function queryString(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

async function send(method, path, { query, body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(PREFIX + path + queryString(query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
}

async function parse(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (response.ok) return body;
  const error = body && body.error;
  if (error) throw new ApiError(response.status, error.code, error.message, error.details);
  throw new ApiError(response.status, `HTTP_${response.status}`, response.statusText || "Request failed.");
}

/** Spend the refresh token for a new pair; false (and the session ended) when it is refused. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const refreshToken = sessionStorage.getItem(REFRESH);
      if (!refreshToken) return false;
      try {
        keep(await parse(await send("POST", "/auth/refresh", { body: { refreshToken } })));
        return true;
      } catch (error) {
        if (error instanceof ApiError && error.status < 500 && error.status !== 429) endSession();
        return false;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

export async function request(method, path, { query, body } = {}) {
  let response = await send(method, path, { query, body, token: accessToken() });
  if (response.status === 401 && sessionStorage.getItem(REFRESH) && (await refresh())) {
    response = await send(method, path, { query, body, token: accessToken() });
    if (response.status === 401) endSession();
  }
  return parse(response);
}

export const get = (path, query) => request("GET", path, { query });
export const post = (path, body = {}) => request("POST", path, { body });

/** Log in; the tokens are kept only if `accept(user)` says this account may use the console. */
export async function login(email, password, accept) {
  const session = await parse(await send("POST", "/auth/login", { body: { email, password } }));
  const refusal = accept(session.user);
  if (refusal) {
    // Not an admin: end the session the login just opened, and keep nothing.
    await send("POST", "/auth/logout", { body: { refreshToken: session.refreshToken },
                                         token: session.accessToken }).catch(() => null);
    throw new ApiError(403, "FORBIDDEN", refusal);
  }
  keep(session);
  return session.user;
}

export async function logout() {
  const token = accessToken();
  const refreshToken = sessionStorage.getItem(REFRESH);
  forget();
  if (token) {
    await send("POST", "/auth/logout", { body: refreshToken ? { refreshToken } : {}, token }).catch(() => null);
  }
}
