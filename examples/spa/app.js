// The demo SPA: everything it does with authsvc goes through the reference client.
// ?api=http://localhost:8000 chooses the service; ?store=cookie (default: memory + HttpOnly
// cookie) or ?store=local (the seed's contract: both tokens in localStorage).
import {
  AuthError,
  createAuthClient,
  localStorageStore,
  memoryStore,
} from "./authsvc-client.js";

const params = new URLSearchParams(location.search);
const api = params.get("api") || "http://localhost:8000";
const storeKind = params.get("store") === "local" ? "local" : "cookie";
const $ = (id) => document.getElementById(id);

const client = createAuthClient({
  baseUrl: api,
  store: storeKind === "local" ? localStorageStore() : memoryStore(),
  onChange: render,
});
// For the browser tests and the curious: the client of this page.
window.authsvcDemo = { client, api, storeKind };

function say(text, ok = false) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

const REASONS = {
  invalid_token: "Your session has ended (signed out on another device, or expired).",
  refresh_token_reused: "Your session was ended for safety: a refresh token was used twice.",
  logout: "Signed out.",
  logout_all: "Signed out everywhere.",
  session_revoked: "This device was signed out.",
};

function render(change) {
  const state = client.state();
  $("signed-in").hidden = !state;
  $("signed-out").hidden = Boolean(state);
  $("status").textContent = state ? `signed in: ${state.user.email}` : "signed out";
  document.body.dataset.auth = state ? "signed-in" : "signed-out";
  if (state) {
    $("user-name").textContent = state.user.name || state.user.email;
    $("user-email").textContent = state.user.email;
  } else {
    $("devices").hidden = true;
    const reason = change?.reason;
    if (reason && reason !== "not_signed_in") say(REASONS[reason] || `Signed out (${reason}).`);
  }
  tick();
}

function tick() {
  const state = client.state();
  if (!state) return;
  const left = Math.max(0, Math.round((state.expiresAt - Date.now()) / 1000));
  $("expiry").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  $("expiry-at").textContent = `(at ${new Date(state.expiresAt).toLocaleTimeString()})`;
}
setInterval(tick, 1000);

async function attempt(action) {
  try {
    await action();
  } catch (error) {
    if (error instanceof AuthError && !client.state()) return; // render() said why
    say(error instanceof AuthError ? `${error.code}: ${error.message}` : String(error));
  }
}

async function showDevices() {
  const sessions = await client.sessions();
  const rows = sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.sessionId = s.id;
    const cells = [
      `${s.current ? "★ this device · " : ""}${(s.user_agent || "unknown").slice(0, 60)}`,
      s.ip_address || "",
      new Date(s.last_used_at).toLocaleString(),
      new Date(s.expires_at).toLocaleString(),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const button = document.createElement("button");
    button.textContent = s.current ? "Sign out" : "Revoke";
    button.className = "revoke";
    button.onclick = () =>
      attempt(async () => {
        await client.revokeSession(s.id);
        if (client.state()) await showDevices();
        say("Device signed out.", true);
      });
    const td = document.createElement("td");
    td.append(button);
    tr.append(td);
    return tr;
  });
  $("device-rows").replaceChildren(...rows);
  $("devices").hidden = false;
}

$("signin-form").onsubmit = (event) => {
  event.preventDefault();
  attempt(async () => {
    await client.login($("signin-email").value, $("signin-password").value);
    say("Signed in.", true);
  });
};
$("signup-form").onsubmit = (event) => {
  event.preventDefault();
  attempt(async () => {
    const name = $("signup-name").value.trim() || null;
    await client.register($("signup-email").value, $("signup-password").value, name);
    say("Account created; you are signed in.", true);
  });
};
$("show-devices").onclick = () => attempt(showDevices);
$("refresh-now").onclick = () =>
  attempt(async () => {
    await client.refresh();
    say("Access token refreshed.", true);
  });
$("sign-out").onclick = () => attempt(() => client.logout());
$("sign-out-all").onclick = () => attempt(() => client.logoutAll());

$("api").textContent = api;
$("store-kind").textContent =
  storeKind === "local" ? "localStorage (seed's contract)" : "HttpOnly cookie (recommended)";
$("switch-store").onclick = (event) => {
  event.preventDefault();
  params.set("store", storeKind === "local" ? "cookie" : "local");
  location.search = params.toString();
};

// Cookie mode: a reload has no access token in memory; the cookie gets a new one.
if (storeKind === "cookie") await client.restore();
render();
document.body.dataset.ready = "true";
