// node --test clients/js/test/  (Node >= 18; no dependencies)
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import {
  AuthError,
  createAuthClient,
  localStorageStore,
  memoryStore,
} from "../authsvc-client.js";
import { fakeAuthsvc, fakeLocks, memoryStorage, sleep } from "./fake-authsvc.js";

const BASE = "http://auth.test";
const EMAIL = "alice@example.com";
const PASSWORD = "correct horse battery staple";
const opened = [];

function tab(server, options = {}) {
  let clock = options.start ?? 1_000_000;
  const client = createAuthClient({
    baseUrl: BASE,
    fetch: server.fetch,
    now: () => clock,
    locks: null,
    lockStorage: null,
    channelName: `test-${opened.length}-${Math.random()}`,
    ...options,
  });
  client.advance = (seconds) => {
    clock += seconds * 1000;
  };
  opened.push(client);
  return client;
}

afterEach(() => {
  for (const client of opened.splice(0)) client.close();
});

const refreshCalls = (server) => server.calls.filter((c) => c.path === "/api/auth/refresh");

test("localStorageStore keeps both tokens under the seed's keys; authFetch sends the bearer", async () => {
  const server = fakeAuthsvc();
  const storage = memoryStorage();
  const client = tab(server, { store: localStorageStore({ storage }) });
  const user = await client.login(EMAIL, PASSWORD);
  assert.equal(user.email, EMAIL);
  assert.match(storage.getItem("access_token"), /^at-/);
  assert.match(storage.getItem("refresh_token"), /^rt-/);
  const response = await client.authFetch("/api/auth/me");
  assert.equal(response.status, 200);
  const sent = server.calls.at(-1);
  assert.equal(sent.headers.get("Authorization"), `Bearer ${storage.getItem("access_token")}`);
  // Body mode never asks the browser for the cookie.
  assert.ok(server.calls.every((c) => c.init.credentials !== "include"));
});

test("refreshes shortly before expiry, and not earlier", async () => {
  const server = fakeAuthsvc({ accessTtl: 300 });
  const client = tab(server, { store: localStorageStore({ storage: memoryStorage() }) });
  await client.login(EMAIL, PASSWORD);
  client.advance(300 - 31);
  await client.authFetch("/api/auth/me");
  assert.equal(server.refreshes, 0);
  client.advance(2); // now inside the 30 s leeway
  const before = client.state().accessToken;
  assert.equal((await client.authFetch("/api/auth/me")).status, 200);
  assert.equal(server.refreshes, 1);
  assert.notEqual(client.state().accessToken, before);
});

test("a 401 gets one refresh and one retry, never a loop", async () => {
  const server = fakeAuthsvc();
  const client = tab(server, { store: localStorageStore({ storage: memoryStorage() }) });
  await client.login(EMAIL, PASSWORD);
  server.failNextAccess = 1;
  assert.equal((await client.authFetch("/api/auth/me")).status, 200);
  assert.equal(server.refreshes, 1);
  server.failNextAccess = 2; // refused again after the refresh: the answer is returned
  assert.equal((await client.authFetch("/api/auth/me")).status, 401);
  assert.equal(server.refreshes, 2);
});

test("concurrent calls in one tab share one refresh", async () => {
  const server = fakeAuthsvc({ accessTtl: 60 });
  const client = tab(server, { store: localStorageStore({ storage: memoryStorage() }) });
  await client.login(EMAIL, PASSWORD);
  client.advance(3600);
  const answers = await Promise.all(
    Array.from({ length: 5 }, () => client.authFetch("/api/auth/me")),
  );
  assert.deepEqual(
    answers.map((r) => r.status),
    [200, 200, 200, 200, 200],
  );
  assert.equal(server.refreshes, 1);
});

async function twoTabsRefreshAtOnce(lockOptions) {
  const server = fakeAuthsvc({ accessTtl: 60 });
  const storage = memoryStorage();
  const a = tab(server, { store: localStorageStore({ storage }), ...lockOptions(storage) });
  const b = tab(server, { store: localStorageStore({ storage }), ...lockOptions(storage) });
  await a.login(EMAIL, PASSWORD);
  a.advance(3600);
  b.advance(3600);
  const answers = await Promise.all([a.authFetch("/api/auth/me"), b.authFetch("/api/auth/me")]);
  return { server, answers, storage };
}

test("two tabs with Web Locks: one refresh, no reuse", async () => {
  const locks = fakeLocks();
  const { server, answers } = await twoTabsRefreshAtOnce(() => ({ locks }));
  assert.deepEqual(
    answers.map((r) => r.status),
    [200, 200],
  );
  assert.equal(server.reused, 0);
  assert.equal(server.refreshes, 1); // the second tab used the first one's result
});

test("two tabs without Web Locks: the localStorage lease keeps them apart", async () => {
  const { server, answers, storage } = await twoTabsRefreshAtOnce((s) => ({ lockStorage: s }));
  assert.deepEqual(
    answers.map((r) => r.status),
    [200, 200],
  );
  assert.equal(server.reused, 0);
  assert.equal(server.refreshes, 1);
  assert.ok(storage.keys().every((key) => !key.endsWith(" lock")), "the lease is released");
});

test("without any lock two tabs spend one token twice (what the locks prevent)", async () => {
  const server = fakeAuthsvc({ accessTtl: 60 });
  const storage = memoryStorage();
  const a = tab(server, { store: localStorageStore({ storage }) });
  const b = tab(server, { store: localStorageStore({ storage }) });
  await a.login(EMAIL, PASSWORD);
  a.advance(3600);
  b.advance(3600);
  const results = await Promise.allSettled([a.refresh(), b.refresh()]);
  assert.equal(server.reused, 1);
  assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
});

test("cookie mode: the refresh token is never held; refresh sends {} with the cookie", async () => {
  const server = fakeAuthsvc({ transport: "cookie" });
  const store = memoryStore();
  const storage = memoryStorage();
  const client = tab(server, { store, lockStorage: storage });
  await client.login(EMAIL, PASSWORD);
  assert.equal(client.state().refreshToken, undefined);
  assert.ok(server.cookie, "the (fake) browser holds the cookie");
  client.advance(3600);
  assert.equal((await client.authFetch("/api/auth/me")).status, 200);
  const [call] = refreshCalls(server);
  assert.equal(call.init.credentials, "include");
  assert.equal(call.init.body, "{}");
  assert.equal(call.headers.get("Content-Type"), "application/json");
  assert.equal(JSON.stringify(client.state()).includes("rt-"), false);
  assert.equal(storage.length, 0, "nothing of the session is in storage");
});

test("cookie mode: a fresh page restores its access token from the cookie", async () => {
  const server = fakeAuthsvc({ transport: "cookie" });
  await tab(server, { store: memoryStore() }).login(EMAIL, PASSWORD);
  const reloaded = tab(server, { store: memoryStore() });
  assert.equal(reloaded.state(), null);
  assert.equal((await reloaded.restore()).email, EMAIL);
  assert.equal((await reloaded.authFetch("/api/auth/me")).status, 200);
});

test("cookie mode: another tab's refresh reaches this tab over BroadcastChannel", async () => {
  const server = fakeAuthsvc({ transport: "cookie", accessTtl: 60 });
  const channelName = `shared-${Math.random()}`;
  const a = tab(server, { store: memoryStore(), channelName });
  const b = tab(server, { store: memoryStore(), channelName });
  await a.login(EMAIL, PASSWORD);
  await sleep(20); // message delivery
  assert.equal(b.state().accessToken, a.state().accessToken);
  a.advance(3600);
  await a.authFetch("/api/auth/me");
  await sleep(20);
  assert.equal(b.state().accessToken, a.state().accessToken);
  assert.equal(server.refreshes, 1);
});

test("a refused refresh signs out: store cleared, listeners told, AuthError thrown", async () => {
  const server = fakeAuthsvc();
  const changes = [];
  const storage = memoryStorage();
  const client = tab(server, {
    store: localStorageStore({ storage }),
    onChange: (change) => changes.push(change),
  });
  await client.login(EMAIL, PASSWORD);
  server.revokeEverything(); // e.g. the session was revoked from another device
  await assert.rejects(client.authFetch("/api/auth/me"), (error) => {
    assert.ok(error instanceof AuthError);
    assert.equal(error.code, "invalid_token");
    return true;
  });
  assert.equal(storage.getItem("refresh_token"), null);
  assert.equal(client.state(), null);
  assert.deepEqual(changes.at(-1), {
    signedIn: false,
    user: null,
    expiresAt: null,
    reason: "invalid_token",
  });
  await assert.rejects(client.authFetch("/api/auth/me"), { code: "not_signed_in" });
});

test("logout sends the token in body mode and {} with the cookie in cookie mode", async () => {
  const body = fakeAuthsvc();
  const bodyClient = tab(body, { store: localStorageStore({ storage: memoryStorage() }) });
  await bodyClient.login(EMAIL, PASSWORD);
  const token = bodyClient.state().refreshToken;
  await bodyClient.logout();
  assert.deepEqual(JSON.parse(body.calls.at(-1).init.body), { refresh_token: token });
  assert.equal(bodyClient.state(), null);

  const cookie = fakeAuthsvc({ transport: "cookie" });
  const cookieClient = tab(cookie, { store: memoryStore() });
  await cookieClient.login(EMAIL, PASSWORD);
  await cookieClient.logout();
  const sent = cookie.calls.at(-1);
  assert.equal(sent.init.body, "{}");
  assert.equal(sent.init.credentials, "include");
  assert.equal(cookie.cookie, null);
  assert.equal(cookieClient.state(), null);
});

test("error answers become AuthError with authsvc's code", async () => {
  const client = tab(fakeAuthsvc(), { store: memoryStore() });
  await assert.rejects(client.login(EMAIL, "wrong password"), {
    name: "AuthError",
    code: "invalid_credentials",
    status: 401,
  });
});
