"""The demo SPA and the reference client in real headless Chromium, against real gunicorn.

authsvc listens on http://localhost:<port>; the demo is served from http://localhost:<other
port> (another origin, the same site, as a front end on app.example.org beside
auth.example.org would be). A third origin, not allowed by CORS_ORIGINS, plays the hostile
page. Screenshots go to test-artifacts/ (TEST_ARTIFACTS_DIR).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, ROOT
from examples.spa import make_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver; .ci/run installs them)",
    ),
]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts"))
COOKIE = "authsvc_refresh"
ROWS = "#device-rows tr"
ME = "return (await authsvcDemo.client.authFetch('/api/auth/me')).status"
WAIT = 20  # seconds: generous, other suites share the machine


class StaticSite:
    def __init__(self) -> None:
        self.server = make_server("127.0.0.1", 0)
        self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def demo() -> Iterator[StaticSite]:
    site = StaticSite()
    yield site
    site.close()


@pytest.fixture(scope="module")
def foreign() -> Iterator[StaticSite]:
    """Another origin on the same site, not in CORS_ORIGINS: the browser sends it the cookie."""
    site = StaticSite()
    yield site
    site.close()


class Api:
    """authsvc under test, seen from Python (another device) and from the browser."""

    def __init__(self, server: Any) -> None:
        self.url = server.url  # 127.0.0.1, for Python
        self.browser_url = f"http://localhost:{server.port}"

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def events(self, token: str) -> list[str]:
        status, events = self.call("GET", "/api/auth/events?limit=100", token)
        assert status == 200, events
        return [event["type"] for event in events]


@pytest.fixture
def start_api(live_server: Callable[..., Any], demo: StaticSite) -> Callable[..., Api]:
    def start(**settings: Any) -> Api:
        server = live_server(
            workers=2,
            threads=2,
            CORS_ORIGINS=demo.origin,
            FRONTEND_URL=demo.origin,
            **settings,
        )
        return Api(server)

    return start


def _chrome(profile: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        "--window-size=1100,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # see `sent`
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = _chrome(tmp_path / "profile")
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


def run(driver: Any, body: str, *args: Any) -> Any:
    """Run an async function body in the page; its result, or {'error': code or message}."""
    script = (
        "const done = arguments[arguments.length - 1];"
        f"(async (...args) => {{ {body} }})(...Array.from(arguments).slice(0, -1))"
        ".then((value) => done({value}), (e) => done({error: String(e && (e.code || e.name))}));"
    )
    outcome = driver.execute_async_script(script, *args)
    return outcome


def value(driver: Any, body: str, *args: Any) -> Any:
    outcome = run(driver, body, *args)
    assert "error" not in outcome, outcome
    return outcome.get("value")


def open_demo(driver: Any, demo: StaticSite, api: Api, store: str = "cookie") -> None:
    driver.get(f"{demo.origin}/?api={api.browser_url}&store={store}")
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
    )


def auth_state(driver: Any) -> str:
    return driver.execute_script("return document.body.dataset.auth")


def wait_auth(driver: Any, expected: str) -> None:
    WebDriverWait(driver, WAIT).until(lambda d: auth_state(d) == expected)


def sign_up(driver: Any, email: str, name: str = "Alice") -> None:
    driver.find_element(By.ID, "signup-name").send_keys(name)
    driver.find_element(By.ID, "signup-email").send_keys(email)
    driver.find_element(By.ID, "signup-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "signup").click()
    wait_auth(driver, "signed-in")


def show_devices(driver: Any) -> list[Any]:
    driver.find_element(By.ID, "show-devices").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#device-rows tr") or auth_state(d) != "signed-in"
        )
    )
    return driver.find_elements(By.CSS_SELECTOR, ROWS)


def refresh_cookies(driver: Any) -> list[dict[str, Any]]:
    """Every refresh cookie the browser holds (any path), read through DevTools."""
    try:
        cookies = driver.execute_cdp_cmd("Storage.getCookies", {})["cookies"]
    except Exception:  # an older Chromium: the same list under its former name
        cookies = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
    return [c for c in cookies if c["name"] == COOKIE]


def sent(driver: Any) -> list[dict[str, Any]]:
    """The requests the browser sent since the last call, as DevTools saw them on the wire:
    method, url, the Cookie header and the answer's status."""
    time.sleep(0.5)  # the *ExtraInfo events trail the requests a little
    seen: dict[str, dict[str, Any]] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        request = seen.setdefault(params.get("requestId", ""), {"cookie": "", "status": None})
        if message["method"] == "Network.requestWillBeSent":
            request.update(url=params["request"]["url"], method=params["request"]["method"])
        elif message["method"] == "Network.requestWillBeSentExtraInfo":
            headers = {name.lower(): v for name, v in params["headers"].items()}
            request["cookie"] = headers.get("cookie", "")
        elif message["method"] == "Network.responseReceivedExtraInfo":
            request["status"] = params["statusCode"]
    return [r for r in seen.values() if "url" in r]


def page_secrets(driver: Any) -> str:
    """Everything a script on the page can read where tokens usually end up."""
    return driver.execute_script(
        "return [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage),"
        " JSON.stringify(window.authsvcDemo.client.state())].join(' ')"
    )


def access_token(driver: Any) -> str:
    return driver.execute_script("return window.authsvcDemo.client.state().accessToken")


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def test_seed_localstorage_flow_end_to_end(start_api, demo, browser):
    api = start_api()  # the default transport (both): the seed's body flow is unchanged
    open_demo(browser, demo, api, store="local")
    assert auth_state(browser) == "signed-out"
    sign_up(browser, "seed@example.com")
    stored = browser.execute_script("return {...localStorage}")
    assert stored["access_token"].count(".") == 2  # a JWT
    first_refresh = stored["refresh_token"]
    assert len(first_refresh) >= 43
    assert refresh_cookies(browser) == []  # a body client never asks for the cookie

    # The access token is about to expire: the next authenticated call refreshes first.
    browser.execute_script("localStorage.setItem('access_token_expires_at', '0')")
    rows = show_devices(browser)
    assert len(rows) == 1
    assert "this device" in rows[0].text
    successor = browser.execute_script("return localStorage.refresh_token")
    assert successor != first_refresh
    # Spent: within the grace window presenting it again only returns the same successor.
    status, replay = api.call("POST", "/api/auth/refresh", body={"refresh_token": first_refresh})
    assert (status, replay["refresh_token"]) == (200, successor)

    browser.refresh()  # a reload signs in from storage, as the seed did
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
    )
    assert auth_state(browser) == "signed-in"
    live = browser.execute_script("return localStorage.refresh_token")
    browser.find_element(By.ID, "sign-out").click()
    wait_auth(browser, "signed-out")
    assert browser.execute_script("return localStorage.length") == 0
    assert api.call("POST", "/api/auth/refresh", body={"refresh_token": live})[0] == 401


def test_cookie_mode_never_lets_a_script_see_the_refresh_token(start_api, demo, browser):
    api = start_api(REFRESH_TOKEN_TRANSPORT="cookie")
    open_demo(browser, demo, api)
    sign_up(browser, "cookie@example.com")
    cookies = refresh_cookies(browser)
    assert {c["path"] for c in cookies} == {"/api/auth/refresh", "/api/auth/logout"}
    assert all(c["httpOnly"] and c["sameSite"] == "Lax" for c in cookies)
    token = cookies[0]["value"]
    assert token not in page_secrets(browser)
    assert "refresh_token" not in page_secrets(browser)
    assert "expires in" in browser.find_element(By.ID, "signed-in").text
    screenshot(browser, "demo-signed-in")

    browser.find_element(By.ID, "refresh-now").click()
    WebDriverWait(browser, WAIT).until(lambda d: refresh_cookies(d)[0]["value"] != token)
    rotated = refresh_cookies(browser)[0]["value"]
    assert rotated not in page_secrets(browser)
    assert token not in page_secrets(browser)

    rows = show_devices(browser)
    assert len(rows) == 1
    screenshot(browser, "demo-devices")

    browser.refresh()  # a reload has no token in memory: the cookie gets a new one
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
    )
    assert auth_state(browser) == "signed-in"
    assert refresh_cookies(browser)[0]["value"] not in page_secrets(browser)
    assert "refresh_token_reused" not in api.events(access_token(browser))


@pytest.mark.parametrize(
    ("store", "transport"), [("cookie", "cookie"), ("local", "body")], ids=["cookie", "seed"]
)
def test_two_tabs_refreshing_at_the_same_moment_keep_working(
    start_api, demo, browser, store, transport
):
    # No grace window: only the client's cross-tab lock can keep this from being reuse.
    api = start_api(REFRESH_TOKEN_TRANSPORT=transport, REFRESH_REUSE_GRACE=0)
    open_demo(browser, demo, api, store=store)
    sign_up(browser, f"tabs-{store}@example.com")
    first = browser.current_window_handle
    browser.switch_to.new_window("window")
    open_demo(browser, demo, api, store=store)
    assert auth_state(browser) == "signed-in"  # the second tab shares the session
    tabs = [first, browser.current_window_handle]

    at = int(time.time() * 1000) + 2500
    schedule = (
        "window.__refresh = 'pending';"
        "setTimeout(() => window.authsvcDemo.client.refresh().then("
        "() => { window.__refresh = 'ok'; }, (e) => { window.__refresh = String(e.code); }),"
        " arguments[0] - Date.now());"
    )
    for handle in tabs:
        browser.switch_to.window(handle)
        browser.execute_script(schedule, at)
    for handle in tabs:
        browser.switch_to.window(handle)
        WebDriverWait(browser, WAIT).until(
            lambda d: d.execute_script("return window.__refresh") != "pending"
        )
        assert browser.execute_script("return window.__refresh") == "ok"
    for handle in tabs:
        browser.switch_to.window(handle)
        status = value(
            browser, "return (await authsvcDemo.client.authFetch('/api/auth/me')).status"
        )
        assert status == 200
        assert auth_state(browser) == "signed-in"
    token = access_token(browser)
    assert "refresh_token_reused" not in api.events(token)
    status, sessions = api.call("GET", "/api/auth/sessions", token)
    assert status == 200
    assert len(sessions) == 1


def test_a_foreign_page_can_neither_read_responses_nor_ride_the_cookie(
    start_api, demo, foreign, browser
):
    api = start_api(REFRESH_TOKEN_TRANSPORT="cookie", REFRESH_REUSE_GRACE=0)
    open_demo(browser, demo, api)
    sign_up(browser, "target@example.com")
    token = access_token(browser)
    cookie_before = refresh_cookies(browser)[0]["value"]
    _, sessions = api.call("GET", "/api/auth/sessions", token)
    used_before = sessions[0]["last_used_at"]

    browser.get(f"{foreign.origin}/nothing-here")  # any page of the hostile origin
    sent(browser)  # forget what came before
    attacks = {
        "cors_json": "return (await fetch(args[0] + '/api/auth/refresh', {method: 'POST',"
        " credentials: 'include', headers: {'Content-Type': 'application/json'},"
        " body: '{}'})).status",
        "cors_read": "return await (await fetch(args[0] + '/api/auth/sessions',"
        " {credentials: 'include'})).text()",
        "no_cors_text": "return (await fetch(args[0] + '/api/auth/refresh', {method: 'POST',"
        " mode: 'no-cors', credentials: 'include', body: '{}'})).type",
        "no_cors_empty": "return (await fetch(args[0] + '/api/auth/refresh', {method: 'POST',"
        " mode: 'no-cors', credentials: 'include', body: ''})).type",
        "no_cors_form": "return (await fetch(args[0] + '/api/auth/refresh', {method: 'POST',"
        " mode: 'no-cors', credentials: 'include', body: new URLSearchParams({a: '1'})})).type",
    }
    outcomes = {name: run(browser, script, api.browser_url) for name, script in attacks.items()}
    # Nothing comes back to the page: no CORS headers for its origin, and the blind (no-cors)
    # answers are withheld too (Cross-Origin-Resource-Policy: same-origin).
    assert set(map(json.dumps, outcomes.values())) == {json.dumps({"error": "TypeError"})}
    # The blind requests did carry the cookie (same site), and were refused before anything
    # was spent: text/plain and form bodies with content are no JSON (415) unless text/plain is
    # accepted for body clients, and then the CSRF rule refuses them (403) as it refuses the
    # empty one here. The JSON one never left: its preflight was refused.
    refreshes = [
        r for r in sent(browser) if r["url"].endswith("/refresh") and r["method"] == "POST"
    ]
    on_the_wire = [r for r in refreshes if r["status"] is not None]
    assert len(refreshes) == 4
    assert len(on_the_wire) == 3  # in order: text, empty, form
    assert all(f"{COOKIE}={cookie_before}" in r["cookie"] for r in on_the_wire)
    text, empty, form = (r["status"] for r in on_the_wire)
    assert empty == 403
    assert text in (403, 415)
    assert form in (403, 415)
    # Nothing was spent.
    assert refresh_cookies(browser)[0]["value"] == cookie_before
    _, sessions = api.call("GET", "/api/auth/sessions", token)
    assert sessions[0]["last_used_at"] == used_before

    open_demo(browser, demo, api)  # the real front end still refreshes with that cookie
    assert auth_state(browser) == "signed-in"
    assert "refresh_token_reused" not in api.events(access_token(browser))


def test_logout_clears_the_cookie(start_api, demo, browser):
    api = start_api(REFRESH_TOKEN_TRANSPORT="cookie")
    open_demo(browser, demo, api)
    sign_up(browser, "leaving@example.com")
    token = refresh_cookies(browser)[0]["value"]
    browser.find_element(By.ID, "sign-out").click()
    wait_auth(browser, "signed-out")
    WebDriverWait(browser, WAIT).until(lambda d: refresh_cookies(d) == [])
    assert api.call("POST", "/api/auth/refresh", body={"refresh_token": token})[0] == 401
    open_demo(browser, demo, api)  # a reload finds no session
    assert auth_state(browser) == "signed-out"


def test_a_session_revoked_from_another_device_signs_the_page_out(start_api, demo, browser):
    api = start_api(REFRESH_TOKEN_TRANSPORT="cookie")
    open_demo(browser, demo, api)
    sign_up(browser, "revoked@example.com")
    status, phone = api.call(
        "POST", "/api/auth/login", body={"email": "revoked@example.com", "password": PASSWORD}
    )
    assert status == 200
    _, sessions = api.call("GET", "/api/auth/sessions", phone["access_token"])
    page_session = next(s["id"] for s in sessions if not s["current"])
    assert api.call("DELETE", f"/api/auth/sessions/{page_session}", phone["access_token"])[0] == 204

    show_devices(browser)  # the page's next call
    wait_auth(browser, "signed-out")
    assert "session has ended" in browser.find_element(By.ID, "message").text
    WebDriverWait(browser, WAIT).until(lambda d: refresh_cookies(d) == [])
    assert api.call("GET", "/api/auth/me", phone["access_token"])[0] == 200  # the phone stays
