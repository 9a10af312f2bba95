// authsvc reference client: one dependency-free ES module for browser apps (and Node >= 18).
//
//   import { createAuthClient, memoryStore } from "./authsvc-client.js";
//   const auth = createAuthClient({ baseUrl: "https://auth.example.org", store: memoryStore() });
//   await auth.login(email, password);
//   const res = await auth.authFetch("/api/auth/me");   // or any URL of your own API
//
// Stores: memoryStore() keeps the access token in this tab's memory and leaves the refresh
// token to the HttpOnly cookie authsvc sets (REFRESH_TOKEN_TRANSPORT=cookie or both): no
// script can read it. localStorageStore() is the seed's contract (both tokens in
// localStorage); use it only where the cookie cannot work (see docs/browser-clients.md).
//
// Refreshes happen one at a time per tab and across the tabs of one origin (Web Locks,
// else a lease in localStorage), and a tab that gets the lock after another tab refreshed
// uses that tab's result instead of spending a token again.

/**
 * @typedef {{id: string, email: string, name: string | null, created_at: string}} User
 * @typedef {{access_token: string, refresh_token?: string, token_type: "bearer",
 *   expires_in: number, refresh_expires_in: number, user: User}} TokenPair
 * @typedef {{accessToken: string, refreshToken?: string, expiresAt: number, user: User}} AuthState
 *   expiresAt: the access token's expiry, in ms since the epoch (this machine's clock)
 * @typedef {{transport: "cookie" | "body", shared?: boolean, load(): AuthState | null,
 *   save(state: AuthState): void, clear(): void}} TokenStore
 *   shared: whether every tab sees the same state (localStorage) or each tab its own
 * @typedef {{id: string, created_at: string, last_used_at: string, expires_at: string,
 *   user_agent: string | null, ip_address: string | null, current: boolean}} Session
 * @typedef {{signedIn: boolean, user: User | null, expiresAt: number | null,
 *   reason?: string}} AuthChange
 */

const JSON_HEADERS = { "Content-Type": "application/json", Accept: "application/json" };

/** An error answer of authsvc (RFC 9457 problem details), or a client-side auth failure. */
export class AuthError extends Error {
  /**
   * @param {string} code  authsvc's stable code (`invalid_credentials`, `invalid_token`, …)
   * @param {string} message
   * @param {number} [status]
   * @param {object} [problem]  the problem+json body
   */
  constructor(code, message, status = 0, problem = undefined) {
    super(message);
    this.name = "AuthError";
    this.code = code;
    this.status = status;
    this.problem = problem;
  }
}

/**
 * The recommended store: the access token lives in this tab's memory only; the refresh
 * token is the HttpOnly cookie, which the browser sends to /refresh and /logout itself.
 * @returns {TokenStore}
 */
export function memoryStore() {
  /** @type {AuthState | null} */
  let state = null;
  return {
    transport: "cookie",
    shared: false,
    load: () => state,
    save(next) {
      state = { ...next, refreshToken: undefined };
    },
    clear() {
      state = null;
    },
  };
}

/**
 * The seed's contract: both tokens in localStorage, under `access_token` and
 * `refresh_token` (plus the access token's expiry and the user). Any script on the page can
 * read them; prefer memoryStore() in browsers.
 * @param {{storage?: Storage, prefix?: string}} [options]
 * @returns {TokenStore}
 */
export function localStorageStore({ storage = globalThis.localStorage, prefix = "" } = {}) {
  const key = (name) => `${prefix}${name}`;
  return {
    transport: "body",
    shared: true,
    load() {
      const accessToken = storage.getItem(key("access_token"));
      const refreshToken = storage.getItem(key("refresh_token"));
      if (!accessToken || !refreshToken) return null;
      const expiresAt = Number(storage.getItem(key("access_token_expires_at")) || 0);
      const user = JSON.parse(storage.getItem(key("user")) || "null");
      return { accessToken, refreshToken, expiresAt, user };
    },
    save(state) {
      storage.setItem(key("access_token"), state.accessToken);
      storage.setItem(key("refresh_token"), state.refreshToken ?? "");
      storage.setItem(key("access_token_expires_at"), String(state.expiresAt));
      storage.setItem(key("user"), JSON.stringify(state.user));
    },
    clear() {
      for (const name of ["access_token", "refresh_token", "access_token_expires_at", "user"]) {
        storage.removeItem(key(name));
      }
    },
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A lock across the tabs of an origin without Web Locks: a lease in localStorage. Write,
 * wait, read back: of tabs writing at once, the last write wins and the others see it.
 */
async function withStorageLease(storage, key, fn, leaseMs = 15000) {
  const me = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const read = () => {
    try {
      return JSON.parse(storage.getItem(key) || "null");
    } catch {
      return null;
    }
  };
  for (;;) {
    const held = read();
    if (!held || held.until < Date.now()) {
      storage.setItem(key, JSON.stringify({ id: me, until: Date.now() + leaseMs }));
      await sleep(40);
      if (read()?.id === me) break;
    } else {
      await sleep(25 + Math.random() * 50);
    }
  }
  try {
    return await fn();
  } finally {
    if (read()?.id === me) storage.removeItem(key);
  }
}

/**
 * @param {object} options
 * @param {string} options.baseUrl  where authsvc is, e.g. "https://auth.example.org"
 * @param {TokenStore} [options.store]  memoryStore() (default) or localStorageStore()
 * @param {number} [options.refreshLeeway]  refresh this many seconds before expiry (30)
 * @param {typeof fetch} [options.fetch]
 * @param {() => number} [options.now]  the clock, in ms (Date.now)
 * @param {{request: Function} | null} [options.locks]  navigator.locks, or null for the lease
 * @param {Storage | null} [options.lockStorage]  where the lease lives without Web Locks
 * @param {string} [options.channelName]  BroadcastChannel name shared by the tabs
 * @param {(change: AuthChange) => void} [options.onChange]
 */
export function createAuthClient({
  baseUrl,
  store = memoryStore(),
  refreshLeeway = 30,
  fetch: fetchImpl = globalThis.fetch.bind(globalThis),
  now = () => Date.now(),
  locks = globalThis.navigator?.locks ?? null,
  lockStorage = globalThis.localStorage ?? null,
  channelName = "authsvc",
  onChange = () => {},
} = {}) {
  const api = baseUrl.replace(/\/+$/, "");
  const cookieMode = store.transport === "cookie";
  // Cookie mode must let the browser store and send the cookie across origins.
  const credentials = cookieMode ? "include" : "omit";
  const lockName = `authsvc-refresh ${api}`;
  const channel =
    typeof BroadcastChannel === "function" ? new BroadcastChannel(`${channelName} ${api}`) : null;
  /** @type {Promise<AuthState> | null} */
  let refreshing = null;

  const notify = (reason) => {
    const state = store.load();
    onChange({
      signedIn: Boolean(state),
      user: state?.user ?? null,
      expiresAt: state?.expiresAt ?? null,
      ...(reason ? { reason } : {}),
    });
  };

  if (channel) {
    // Other tabs: a refresh they did (cookie mode: their new access token is ours too, as
    // the session is one per browser) or a sign-out.
    channel.onmessage = ({ data }) => {
      if (data?.type === "tokens" && cookieMode && data.state) store.save(data.state);
      if (data?.type === "signed-out") store.clear();
      notify(data?.type === "signed-out" ? data.reason : undefined);
    };
  }

  const broadcast = (message) => channel?.postMessage(message);

  /** @returns {Promise<any>} the JSON body; AuthError for any error answer */
  async function call(path, { method = "POST", body, token, withCookie = false } = {}) {
    const headers = { ...JSON_HEADERS };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetchImpl(`${api}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: withCookie ? credentials : "omit",
      cache: "no-store",
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      throw new AuthError(
        data?.code ?? "http_error",
        data?.detail ?? `HTTP ${response.status}`,
        response.status,
        data ?? undefined,
      );
    }
    return data;
  }

  /** @param {TokenPair} pair */
  function accept(pair) {
    const state = {
      accessToken: pair.access_token,
      refreshToken: cookieMode ? undefined : pair.refresh_token,
      expiresAt: now() + pair.expires_in * 1000,
      user: pair.user,
    };
    store.save(state);
    broadcast({ type: "tokens", state: cookieMode ? state : null });
    notify();
    return state;
  }

  function signOut(reason) {
    store.clear();
    broadcast({ type: "signed-out", reason });
    notify(reason);
  }

  const fresh = (state) => state && state.expiresAt - refreshLeeway * 1000 > now();

  async function exclusive(fn) {
    if (locks) return locks.request(lockName, fn);
    if (lockStorage) return withStorageLease(lockStorage, `${lockName} lock`, fn);
    return fn();
  }

  /**
   * Refresh now, unless another refresh (this tab's or another tab's) already replaced
   * `stale`: one at a time, and never the same refresh token twice.
   * @param {string | undefined} stale  the access token found wanting
   * @returns {Promise<AuthState>}
   */
  function refresh(stale = store.load()?.accessToken) {
    if (!refreshing) {
      refreshing = exclusive(async () => {
        const current = store.load();
        if (current && current.accessToken !== stale && fresh(current)) return current;
        if (!cookieMode && !current?.refreshToken) {
          throw new AuthError("not_signed_in", "not signed in");
        }
        try {
          const pair = await call("/api/auth/refresh", {
            body: cookieMode ? {} : { refresh_token: current.refreshToken },
            withCookie: true,
          });
          return accept(pair);
        } catch (error) {
          // 401 (invalid, revoked, reused), 403 (refused cookie), 422 (no token at all):
          // this session is over.
          if (error instanceof AuthError && [401, 403, 422].includes(error.status)) {
            signOut(error.status === 422 ? "not_signed_in" : error.code);
          }
          throw error;
        }
      }).finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  /** An access token valid for at least `refreshLeeway` more seconds. */
  async function accessToken() {
    const state = store.load();
    if (fresh(state)) return state.accessToken;
    if (!state && !cookieMode) throw new AuthError("not_signed_in", "not signed in");
    return (await refresh(state?.accessToken)).accessToken;
  }

  /**
   * fetch() with the access token: refreshed shortly before it expires, and once more
   * (then the request retried once) when the server answers 401 anyway.
   * A path ("/api/auth/me") is taken relative to baseUrl; any other URL as it is.
   * @param {string} input
   * @param {RequestInit} [init]
   */
  async function authFetch(input, init = {}) {
    const url = input.startsWith("/") ? `${api}${input}` : input;
    const send = (token) => {
      const headers = new Headers(init.headers);
      headers.set("Authorization", `Bearer ${token}`);
      return fetchImpl(url, { ...init, headers });
    };
    const token = await accessToken();
    const response = await send(token);
    if (response.status !== 401) return response;
    const renewed = await refresh(token);
    return send(renewed.accessToken);
  }

  async function json(path, init) {
    const response = await authFetch(path, init);
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      throw new AuthError(data?.code ?? "http_error", data?.detail ?? "", response.status, data);
    }
    return data;
  }

  return {
    /** @returns {Promise<User>} */
    async register(email, password, name = null) {
      const body = { email, password, name };
      return accept(await call("/api/auth/register", { body, withCookie: true })).user;
    },
    /** @returns {Promise<User>} */
    async login(email, password) {
      const body = { email, password };
      return accept(await call("/api/auth/login", { body, withCookie: true })).user;
    },
    /** Cookie mode: after a page load, get an access token from the cookie (if any). */
    async restore() {
      try {
        return (await refresh()).user;
      } catch (error) {
        if (error instanceof AuthError) return null;
        throw error;
      }
    },
    /** End this session (this browser's, in cookie mode); always signs out locally. */
    async logout() {
      const state = store.load();
      try {
        await call("/api/auth/logout", {
          body: cookieMode ? {} : { refresh_token: state?.refreshToken ?? "" },
          withCookie: true,
        });
      } finally {
        signOut("logout");
      }
    },
    /** End every session of the user; the count of sessions ended. */
    async logoutAll() {
      const body = await json("/api/auth/logout-all", { method: "POST" });
      signOut("logout_all");
      return body.revoked_sessions;
    },
    /** @returns {Promise<Session[]>} */
    sessions: () => json("/api/auth/sessions"),
    /** Revoke one of the user's sessions (a device); revoking this one signs out here. */
    async revokeSession(id) {
      const current = (await json("/api/auth/sessions")).find((s) => s.current);
      await json(`/api/auth/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (current?.id === id) signOut("session_revoked");
    },
    /** @returns {Promise<User>} */
    me: () => json("/api/auth/me"),
    events: (limit = 50) => json(`/api/auth/events?limit=${limit}`),
    authFetch,
    accessToken,
    refresh: () => refresh(),
    /** @returns {AuthState | null} */
    state: () => store.load(),
    /** Stop listening to other tabs. */
    close() {
      channel?.close();
    },
  };
}
