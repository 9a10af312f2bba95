// A stand-in for authsvc's token endpoints, strict about rotation: a spent refresh token is
// reuse (no grace window), so a client that spends one token twice is caught.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
    get length() {
      return items.size;
    },
    keys: () => [...items.keys()],
  };
}

/** navigator.locks, as far as the client uses it: exclusive locks in request order. */
export function fakeLocks() {
  const tails = new Map();
  return {
    request(name, callback) {
      const previous = tails.get(name) ?? Promise.resolve();
      const run = previous.then(() => callback({ name }));
      tails.set(name, run.catch(() => {}));
      return run;
    },
  };
}

const USER = { id: "u1", email: "alice@example.com", name: null, created_at: "2026-01-01T00:00:00Z" };

export function fakeAuthsvc({ transport = "both", accessTtl = 1800 } = {}) {
  const live = new Map(); // refresh token -> session id
  const spent = new Set();
  const access = new Set();
  const server = { refreshes: 0, reused: 0, calls: [], cookie: null, failNextAccess: 0 };
  let counter = 0;

  const answer = (status, body) =>
    new Response(body === null ? null : JSON.stringify(body), {
      status,
      headers: { "Content-Type": status >= 400 ? "application/problem+json" : "application/json" },
    });
  const problem = (status, code) => answer(status, { status, code, detail: code, title: code });

  function pair(session, init) {
    counter += 1;
    const refresh = `rt-${counter}`;
    live.set(refresh, session);
    const token = `at-${counter}`;
    access.add(token);
    const body = {
      access_token: token,
      refresh_token: refresh,
      token_type: "bearer",
      expires_in: accessTtl,
      refresh_expires_in: 604800,
      user: USER,
    };
    if (transport !== "body" && init.credentials === "include") server.cookie = refresh;
    if (transport === "cookie") delete body.refresh_token;
    return body;
  }

  server.fetch = async (url, init = {}) => {
    const path = new URL(url).pathname;
    const headers = new Headers(init.headers);
    server.calls.push({ path, init, headers });
    const body = init.body ? JSON.parse(init.body) : {};
    const cookie = init.credentials === "include" ? server.cookie : null;
    switch (path) {
      case "/api/auth/login":
      case "/api/auth/register":
        if (body.password !== "correct horse battery staple") {
          return problem(401, "invalid_credentials");
        }
        return answer(path.endsWith("login") ? 200 : 201, pair(`s-${counter}`, init));
      case "/api/auth/refresh": {
        server.refreshes += 1;
        await sleep(20); // a real round trip: long enough for two tabs to overlap
        const token = body.refresh_token ?? cookie;
        if (!token) return problem(422, "validation_error");
        if (spent.has(token)) {
          server.reused += 1;
          return problem(401, "refresh_token_reused");
        }
        if (!live.has(token)) return problem(401, "invalid_token");
        const session = live.get(token);
        live.delete(token);
        spent.add(token);
        return answer(200, pair(session, init));
      }
      case "/api/auth/logout":
        live.delete(body.refresh_token ?? cookie);
        if (cookie) server.cookie = null;
        return answer(204, null);
      default: {
        const token = (headers.get("Authorization") || "").replace(/^Bearer /, "");
        if (server.failNextAccess > 0) {
          server.failNextAccess -= 1;
          return problem(401, "invalid_token");
        }
        if (!access.has(token)) return problem(401, "invalid_token");
        return answer(200, path === "/api/auth/sessions" ? [] : USER);
      }
    }
  };
  server.revokeEverything = () => {
    live.clear();
    access.clear();
  };
  return server;
}
