"""One rule for a live session and one for a password-checked login, on every path: an access
token of a session past its idle or absolute lifetime is refused everywhere, and a login
that upgrades an old hash cannot open a session against a password changed meanwhile."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from authsvc import create_app
from authsvc.models import AuthSession, User
from conftest import PASSWORD, bearer

NEW_PASSWORD = "a brand new passphrase"
BEARER_CALLS = [
    ("get", "/api/auth/me", None),
    ("get", "/api/auth/sessions", None),
    ("get", "/api/auth/events", None),
    ("post", "/api/auth/logout-all", None),
    ("post", "/api/auth/change-password", {"current_password": PASSWORD, "new_password": "x" * 20}),
]


def _introspect(app: Any, token: str) -> dict[str, Any]:
    out = app.test_cli_runner().invoke(args=["clients", "create", "--name", "resource api"])
    assert out.exit_code == 0, out.output
    creds = dict(line.split(":", 1) for line in out.output.splitlines() if ":" in line)
    raw = f"{creds['client_id'].strip()}:{creds['client_secret'].strip()}".encode()
    response = app.test_client().post(
        "/api/auth/introspect",
        data={"token": token},
        headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert response.status_code == 200
    return response.get_json()


def _assert_refused_everywhere(app: Any, access_token: str) -> None:
    client = app.test_client()
    for method, path, body in BEARER_CALLS:
        response = getattr(client, method)(path, json=body, headers=bearer(access_token))
        assert response.status_code == 401, (path, response.get_json())
        assert response.get_json()["code"] == "invalid_token", path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert _introspect(app, access_token) == {"active": False}


def _register(app: Any) -> dict[str, Any]:
    response = app.test_client().post(
        "/api/auth/register", json={"email": "idle@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_idle_session_refuses_its_unexpired_access_token(make_app, clock):
    app = make_app(REFRESH_TOKEN_TTL=300, ACCESS_TOKEN_TTL=1800)
    pair = _register(app)
    assert app.test_client().get("/api/auth/me", headers=bearer(pair["access_token"])).status_code
    assert _introspect(app, pair["access_token"])["active"] is True
    clock.advance(301)  # the refresh token has lapsed; the access token has 25 minutes left
    _assert_refused_everywhere(app, pair["access_token"])
    listed = app.test_client().post(
        "/api/auth/login", json={"email": "idle@example.com", "password": PASSWORD}
    )
    sessions = (
        app.test_client()
        .get("/api/auth/sessions", headers=bearer(listed.get_json()["access_token"]))
        .get_json()
    )
    assert len(sessions) == 1  # the idle one is not listed either


def test_a_session_past_its_absolute_lifetime_refuses_its_access_token(make_app, clock):
    app = make_app(REFRESH_TOKEN_TTL=300, SESSION_MAX_LIFETIME=400, ACCESS_TOKEN_TTL=1800)
    pair = _register(app)
    clock.advance(200)
    refreshed = app.test_client().post(
        "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 200
    renewed = refreshed.get_json()
    assert 198 <= renewed["refresh_expires_in"] <= 200  # capped by the absolute lifetime
    clock.advance(201)  # past the absolute lifetime; the newest access token is 201 s old
    _assert_refused_everywhere(app, renewed["access_token"])
    again = app.test_client().post(
        "/api/auth/refresh", json={"refresh_token": renewed["refresh_token"]}
    )
    assert again.status_code == 401


class ChangeOnFirstRead:
    """A clock that, the first time it is read once armed, lets `action` run to completion
    first. A login reads it after checking the password and making the upgraded hash, before
    writing: the moment a concurrent password change can slip in."""

    def __init__(self, action: Any) -> None:
        self.action = action
        self.armed = False

    def __call__(self) -> datetime:
        if self.armed:
            self.armed = False
            worker = threading.Thread(target=self.action)
            worker.start()
            worker.join(60)
        return datetime.now(UTC)


def test_a_login_upgrading_its_hash_loses_to_a_password_change(app, base_config, engine):
    pair = _register(app)  # hashed under the suite's argon2 parameters
    outcome: dict[str, Any] = {}

    def change_password() -> None:
        outcome["change"] = app.test_client().post(
            "/api/auth/change-password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(pair["access_token"]),
        )

    # Other argon2 parameters: this app's login re-hashes the old password as it logs in.
    clock = ChangeOnFirstRead(change_password)
    upgrading = create_app({**base_config, "ARGON2_TIME_COST": 2}, clock=clock)
    try:
        clock.armed = True
        login = upgrading.test_client().post(
            "/api/auth/login", json={"email": "idle@example.com", "password": PASSWORD}
        )
    finally:
        upgrading.extensions["authsvc_db"][0].dispose()

    assert outcome["change"].status_code == 200, outcome["change"].get_json()
    assert login.status_code == 401, login.get_json()
    assert login.get_json()["code"] == "invalid_credentials"
    with engine.connect() as conn:
        stored = conn.scalar(select(User.password_hash))
        sessions = conn.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.revoked_at.is_(None))
        )
    assert sessions == 1  # the changing device's own; the login wrote nothing
    client = app.test_client()
    assert (
        client.post(
            "/api/auth/login", json={"email": "idle@example.com", "password": PASSWORD}
        ).status_code
        == 401
    )
    fresh = client.post(
        "/api/auth/login", json={"email": "idle@example.com", "password": NEW_PASSWORD}
    )
    assert fresh.status_code == 200
    with engine.connect() as conn:
        assert conn.scalar(select(User.password_hash)) == stored  # no upgrade overwrote it


def test_a_login_upgrading_its_hash_starts_a_session(app, base_config, engine):
    _register(app)
    with engine.connect() as conn:
        before = conn.scalar(select(User.password_hash))
    upgrading = create_app({**base_config, "ARGON2_TIME_COST": 2})
    try:
        client = upgrading.test_client()
        for _ in range(2):  # the first login upgrades, the second finds the new hash current
            login = client.post(
                "/api/auth/login", json={"email": "idle@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200, login.get_json()
    finally:
        upgrading.extensions["authsvc_db"][0].dispose()
    with engine.connect() as conn:
        after = conn.scalar(select(User.password_hash))
    assert after != before and ",t=2," in after
