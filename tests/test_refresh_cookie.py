"""The refresh token as an HttpOnly cookie (REFRESH_TOKEN_TRANSPORT) and the CSRF rule for the
requests it authenticates; body mode unchanged."""

from __future__ import annotations

import pytest

from authsvc import create_app
from authsvc.config import ConfigError
from conftest import PASSWORD, bearer

FRONT_END = "http://localhost:3000"  # FRONTEND_URL's default, hence allowed in development
COOKIE = "authsvc_refresh"
REFRESH, LOGOUT = "/api/auth/refresh", "/api/auth/logout"
ALICE = {"email": "alice@example.com", "password": PASSWORD}
FROM_FRONT_END = {"Origin": FRONT_END}


def _cookies(response) -> dict[str, str]:
    """Set-Cookie headers of the refresh cookie, by path."""
    found = {}
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{COOKIE}="):
            path = next(p.split("=", 1)[1] for p in header.split("; ") if p.startswith("Path="))
            found[path] = header
    return found


def _held(client, path: str = REFRESH) -> str | None:
    cookie = client.get_cookie(COOKIE, path=path)
    return cookie.value if cookie else None


def _assert_cleared(response) -> None:
    cookies = _cookies(response)
    assert set(cookies) == {REFRESH, LOGOUT}
    assert all(f"{COOKIE}=;" in c and "Max-Age=0" in c for c in cookies.values())


@pytest.fixture
def cookie_app(make_app):
    return make_app(REFRESH_TOKEN_TRANSPORT="cookie")


@pytest.fixture
def browser(cookie_app):
    """A cookie-mode client, logged in as alice: the refresh token is in its cookie jar only."""
    client = cookie_app.test_client()
    response = client.post("/api/auth/register", json=ALICE)
    assert response.status_code == 201
    client.pair = response.get_json()
    return client


def _refresh(client, **headers):
    return client.post(REFRESH, json={}, headers={**FROM_FRONT_END, **headers})


def test_both_mode_is_the_default_body_and_httponly_cookie_per_reading_endpoint(client):
    response = client.post("/api/auth/register", json=ALICE)
    body = response.get_json()
    cookies = _cookies(response)
    assert set(cookies) == {REFRESH, LOGOUT}  # sent to nothing else under /api/auth
    for cookie in cookies.values():
        assert cookie.startswith(f"{COOKIE}={body['refresh_token']};")
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert f"Max-Age={body['refresh_expires_in']}" in cookie
        assert "Secure" not in cookie  # plain http is allowed for localhost in development
    # The seed's body flow is unchanged.
    rotated = client.post(REFRESH, json={"refresh_token": body["refresh_token"]})
    assert rotated.status_code == 200
    assert _cookies(rotated)[REFRESH].startswith(f"{COOKIE}={rotated.get_json()['refresh_token']};")


def test_body_mode_sets_no_cookie_and_still_requires_the_field(make_app):
    client = make_app(REFRESH_TOKEN_TRANSPORT="body").test_client()
    response = client.post("/api/auth/register", json=ALICE)
    assert response.status_code == 201
    assert "refresh_token" in response.get_json()
    assert "Set-Cookie" not in response.headers
    missing = client.post(REFRESH, json={}, headers=FROM_FRONT_END)
    assert missing.status_code == 422
    assert missing.get_json()["errors"] == {"refresh_token": ["Missing data for required field."]}
    assert client.post(LOGOUT, json={}).status_code == 422


def test_cookie_mode_keeps_the_refresh_token_out_of_every_body(browser):
    assert "refresh_token" not in browser.pair
    assert set(browser.pair) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_expires_in",
        "user",
    }
    first = _held(browser)
    response = _refresh(browser)
    assert response.status_code == 200
    assert "refresh_token" not in response.get_json()
    assert _held(browser) not in (None, first)  # rotated in the jar
    me = browser.get("/api/auth/me", headers=bearer(response.get_json()["access_token"]))
    assert me.status_code == 200
    login = browser.post("/api/auth/login", json=ALICE)
    assert "refresh_token" not in login.get_json()
    assert _cookies(login)


@pytest.mark.parametrize(
    ("headers", "content_type", "data"),
    [
        ({}, "application/json", b"{}"),  # no Origin, no Referer
        ({"Origin": "http://evil.example"}, "application/json", b"{}"),
        ({"Origin": "null"}, "application/json", b"{}"),
        ({"Origin": "http://localhost:3000.evil.example"}, "application/json", b"{}"),
        ({"Referer": "http://evil.example/page"}, "application/json", b"{}"),
        # What a cross-site form or a no-cors fetch can send, even from an allowed page:
        (FROM_FRONT_END, "text/plain", b""),
        (FROM_FRONT_END, "application/x-www-form-urlencoded", b""),
        ({**FROM_FRONT_END, "X-Requested-With": "fetch"}, "text/plain", b""),
        (FROM_FRONT_END, None, b""),  # no body, no header a form cannot send
    ],
)
@pytest.mark.parametrize("endpoint", [REFRESH, LOGOUT])
def test_cookie_requests_from_elsewhere_are_refused_and_spend_nothing(
    browser, headers, content_type, data, endpoint
):
    before = _held(browser, endpoint)
    response = browser.post(endpoint, data=data, content_type=content_type, headers=headers)
    assert response.status_code == 403
    assert response.get_json()["code"] == "csrf_failed"
    assert response.mimetype == "application/problem+json"
    assert "Set-Cookie" not in response.headers
    assert _held(browser, endpoint) == before
    assert _refresh(browser).status_code == 200  # the session is intact: nothing was spent


@pytest.mark.parametrize(
    ("headers", "content_type", "data"),
    [
        (FROM_FRONT_END, "application/json", b"{}"),
        ({"Referer": f"{FRONT_END}/devices"}, "application/json", b"{}"),
        ({**FROM_FRONT_END, "X-Requested-With": "XMLHttpRequest"}, None, b""),
        ({"Origin": "http://localhost"}, "application/json", b"{}"),  # the API's own origin
    ],
)
def test_cookie_requests_from_allowed_pages_are_accepted(browser, headers, content_type, data):
    response = browser.post(REFRESH, data=data, content_type=content_type, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert _cookies(response)


def test_a_body_token_needs_no_csrf_proof_and_wins_over_the_cookie(make_app):
    client = make_app().test_client()
    pair = client.post("/api/auth/register", json=ALICE).get_json()
    other = client.post("/api/auth/login", json=ALICE).get_json()  # now the jar holds this one
    # A body client (a mobile app, a server) sends no Origin; the body's token is the one spent.
    response = client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 200
    assert client.post(REFRESH, json={"refresh_token": other["refresh_token"]}).status_code == 200


def test_logout_by_cookie_ends_the_session_and_clears_the_cookie(browser):
    token = _held(browser, LOGOUT)
    response = browser.post(LOGOUT, json={}, headers=FROM_FRONT_END)
    assert response.status_code == 204
    _assert_cleared(response)
    assert _held(browser) is None
    # The token that was in the cookie is dead (a copy presented in the body is refused).
    again = browser.post(REFRESH, json={"refresh_token": token})
    assert again.status_code == 401
    # Logging out with no cookie left is still a quiet 204.
    assert browser.post(LOGOUT, json={}, headers=FROM_FRONT_END).status_code == 204


def test_logout_all_and_revoking_this_session_clear_the_cookie(browser, cookie_app):
    access = browser.pair["access_token"]
    _assert_cleared(browser.post("/api/auth/logout-all", headers=bearer(access)))
    assert _held(browser) is None

    pair = browser.post("/api/auth/login", json=ALICE).get_json()
    elsewhere = cookie_app.test_client().post("/api/auth/login", json=ALICE).get_json()
    sessions = browser.get("/api/auth/sessions", headers=bearer(pair["access_token"])).get_json()
    other = next(s["id"] for s in sessions if not s["current"])
    this = next(s["id"] for s in sessions if s["current"])
    revoked_other = browser.delete(
        f"/api/auth/sessions/{other}", headers=bearer(pair["access_token"])
    )
    assert revoked_other.status_code == 204
    assert "Set-Cookie" not in revoked_other.headers  # another device: this cookie stays
    revoked_this = browser.delete(
        f"/api/auth/sessions/{this}", headers=bearer(pair["access_token"])
    )
    assert revoked_this.status_code == 204
    _assert_cleared(revoked_this)
    assert elsewhere["access_token"]


def test_reuse_detection_clears_the_cookie(make_app, clock):
    client = make_app(REFRESH_REUSE_GRACE=1).test_client()
    first = client.post("/api/auth/register", json=ALICE).get_json()["refresh_token"]
    assert client.post(REFRESH, json={"refresh_token": first}).status_code == 200
    clock.advance(5)  # past the grace window
    reused = client.post(REFRESH, json={"refresh_token": first})
    assert reused.status_code == 401
    assert reused.get_json()["code"] == "refresh_token_reused"
    _assert_cleared(reused)


def test_a_dead_cookie_is_cleared(browser):
    browser.set_cookie(COOKIE, "not-a-token-of-ours", path=REFRESH)
    response = _refresh(browser)
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_token"
    _assert_cleared(response)


@pytest.mark.parametrize(
    ("base_url", "settings", "secure"),
    [
        ("http://localhost", {}, False),
        ("http://127.0.0.1:8000", {}, False),
        ("https://localhost", {}, True),
        ("http://auth.example.org", {}, True),  # plain http elsewhere: browsers drop it
        ("http://localhost", {"REFRESH_COOKIE_SAMESITE": "None"}, True),
    ],
)
def test_secure_everywhere_but_plain_http_localhost_in_development(
    make_app, base_url, settings, secure
):
    client = make_app(**settings).test_client()
    response = client.post("/api/auth/register", json=ALICE, base_url=base_url)
    cookies = _cookies(response)
    assert cookies
    assert all(("; Secure" in c) is secure for c in cookies.values())


def test_cookie_name_path_and_samesite_are_configurable(make_app):
    client = make_app(
        REFRESH_COOKIE_NAME="rt",
        REFRESH_COOKIE_PATH="/auth/api/auth",
        REFRESH_COOKIE_SAMESITE="Strict",
    ).test_client()
    response = client.post("/api/auth/register", json=ALICE)
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("rt=")]
    assert {c.split("Path=")[1].split(";")[0] for c in cookies} == {
        "/auth/api/auth/refresh",
        "/auth/api/auth/logout",
    }
    assert all("SameSite=Strict" in c for c in cookies)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"REFRESH_TOKEN_TRANSPORT": "header"}, "REFRESH_TOKEN_TRANSPORT"),
        ({"REFRESH_COOKIE_SAMESITE": "lax"}, "REFRESH_COOKIE_SAMESITE"),
        ({"REFRESH_COOKIE_NAME": "a;b"}, "REFRESH_COOKIE_NAME"),
        ({"REFRESH_COOKIE_PATH": "/api/auth/"}, "REFRESH_COOKIE_PATH"),
        ({"REFRESH_COOKIE_PATH": "api"}, "REFRESH_COOKIE_PATH"),
        (
            {"REFRESH_COOKIE_SAMESITE": "None", "AUTHSVC_ENV": "production"},
            "REFRESH_COOKIE_SAMESITE=None needs CORS_ORIGINS",
        ),
    ],
)
def test_bad_cookie_settings_are_refused_at_start(base_config, settings, message):
    with pytest.raises(ConfigError, match=message):
        create_app({**base_config, **settings})


def test_development_allows_the_front_end_origin_by_default(client):
    preflight = client.options(
        REFRESH,
        headers={
            "Origin": FRONT_END,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-requested-with",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == FRONT_END
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Requested-With" in preflight.headers["Access-Control-Allow-Headers"]


def test_openapi_documents_the_optional_body_token(client):
    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    assert "refresh_token" not in schemas["TokenPair"]["required"]
    assert "refresh_token" in schemas["TokenPair"]["properties"]
    assert "refresh_token" not in schemas["RefreshTokenArgs"].get("required", [])
