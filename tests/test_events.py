"""Security events: written for each use case, listed newest first by GET /events, and never
holding a secret, neither in the table nor in the JSON log line."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from authsvc.logs import JsonFormatter
from authsvc.models import SecurityEvent
from authsvc.security.tokens import hash_token
from conftest import PASSWORD, bearer

EVENT_FIELDS = {"type", "created_at", "ip_address", "user_agent", "session_id"}


@pytest.fixture
def security_log() -> Iterator[io.StringIO]:
    """What authsvc's security logger writes, formatted exactly as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("authsvc.security")
    old_level = logger.level
    logger.setLevel(logging.INFO)  # the tests run the app at WARNING
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _events(client, pair, **query):
    response = client.get(
        "/api/auth/events", headers=bearer(pair["access_token"]), query_string=query
    )
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def _trigger_every_event(client, clock, register, login):
    """Drive each use case of this service that writes an event; return every secret seen."""
    secrets = [PASSWORD, "wrong password!!"]
    headers = {"User-Agent": "events-test/1.0"}
    first = register()
    secrets += [first["access_token"], first["refresh_token"]]

    clock.advance(1)
    bad = client.post(
        "/api/auth/login",
        json={"email": "alice@example.com", "password": "wrong password!!"},
        headers=headers,
    )
    assert bad.status_code == 401
    unknown = client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert unknown.status_code == 401

    clock.advance(1)
    second = login(**{"User-Agent": "events-test/1.0"})
    secrets += [second["access_token"], second["refresh_token"]]

    clock.advance(1)
    rotated = client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    rotated = rotated.get_json()
    secrets += [rotated["access_token"], rotated["refresh_token"]]
    clock.advance(11)
    reused = client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert reused.get_json()["code"] == "refresh_token_reused"

    clock.advance(1)
    third = login()
    secrets += [third["access_token"], third["refresh_token"]]
    sessions = client.get("/api/auth/sessions", headers=bearer(first["access_token"])).get_json()
    third_id = next(s["id"] for s in sessions if not s["current"])
    assert (
        client.delete(
            f"/api/auth/sessions/{third_id}", headers=bearer(first["access_token"])
        ).status_code
        == 204
    )

    clock.advance(1)
    fourth = login()
    secrets += [fourth["access_token"], fourth["refresh_token"]]
    assert (
        client.post("/api/auth/logout", json={"refresh_token": fourth["refresh_token"]}).status_code
        == 204
    )

    clock.advance(1)
    final = login()
    secrets += [final["access_token"], final["refresh_token"]]
    assert (
        client.post("/api/auth/logout-all", headers=bearer(final["access_token"])).status_code
        == 200
    )
    # The hashes the database stores must not leak either.
    refresh_tokens = [p["refresh_token"] for p in (first, second, rotated, third, fourth, final)]
    secrets += [hash_token(token) for token in refresh_tokens]
    return secrets


EXPECTED_NEWEST_FIRST = [
    "logout_all",
    "login_succeeded",
    "logout",
    "login_succeeded",
    "session_revoked",
    "login_succeeded",
    "refresh_token_reused",
    "login_succeeded",
    "login_failed",
    "login_succeeded",
]


def test_events_are_written_listed_and_hold_no_secret(
    client, clock, register, login, engine, security_log
):
    secrets = _trigger_every_event(client, clock, register, login)
    with engine.connect() as conn:
        password_hash = conn.execute(text("SELECT password_hash FROM users")).scalar_one()
    secrets.append(password_hash)

    # Listed for the user: a fresh login (logout-all ended every session) to read them.
    reader = login()
    events = _events(client, reader)
    assert [e["type"] for e in events[1:]] == EXPECTED_NEWEST_FIRST
    assert events[0]["type"] == "login_succeeded"
    assert all(set(e) == EVENT_FIELDS for e in events)
    created = [e["created_at"] for e in events]
    assert created == sorted(created, reverse=True)
    failed = next(e for e in events if e["type"] == "login_failed")
    assert failed["session_id"] is None
    assert failed["user_agent"] == "events-test/1.0"
    assert failed["ip_address"] == "127.0.0.1"
    assert all(e["session_id"] for e in events if e["type"] != "login_failed")

    # The unknown-email failure is stored (for the operator), but belongs to no user.
    with engine.connect() as conn:
        rows = conn.execute(
            select(SecurityEvent.type, SecurityEvent.user_id, SecurityEvent.details)
        ).all()
        dump = json.dumps(
            [list(r) for r in conn.execute(text("SELECT * FROM security_events"))], default=str
        )
    orphan = [r for r in rows if r.user_id is None]
    assert [(r.type, r.details) for r in orphan] == [("login_failed", {"reason": "unknown_email"})]
    assert {r.type for r in rows} >= set(EXPECTED_NEWEST_FIRST)

    lines = security_log.getvalue().splitlines()
    logged = [json.loads(line) for line in lines]
    assert [entry["event"] for entry in logged].count("login_succeeded") == 6
    assert {entry["event"] for entry in logged} == set(EXPECTED_NEWEST_FIRST)
    assert all(entry["logger"] == "authsvc.security" for entry in logged)
    for secret in secrets:
        assert secret not in dump
        assert secret not in security_log.getvalue()
        assert secret not in json.dumps(events)
    assert "password" not in security_log.getvalue().lower()


def test_events_are_the_users_own(client, register):
    alice = register()
    bob = register(email="bob@example.com")
    client.post("/api/auth/login", json={"email": "bob@example.com", "password": "nope nope nope"})
    alice_events = _events(client, alice)
    bob_events = _events(client, bob)
    assert [e["type"] for e in alice_events] == ["login_succeeded"]
    assert [e["type"] for e in bob_events] == ["login_failed", "login_succeeded"]
    assert alice_events[0]["session_id"] != bob_events[1]["session_id"]


def test_limit_bounds_the_list(client, user, login, clock):
    for _ in range(3):
        clock.advance(1)
        login()
    assert len(_events(client, user)) == 4
    newest_two = _events(client, user, limit=2)
    assert newest_two == _events(client, user)[:2]
    assert len(_events(client, user, limit=100)) == 4


def test_default_and_maximum_page_size(client, user, engine):
    user_id = uuid.UUID(user["user"]["id"])
    start = datetime.now(UTC) - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(
            SecurityEvent.__table__.insert(),
            [
                {"user_id": user_id, "type": "login_failed", "created_at": start + timedelta(0, i)}
                for i in range(150)
            ],
        )
    assert len(_events(client, user)) == 50
    assert len(_events(client, user, limit=100)) == 100


@pytest.mark.parametrize("limit", ["0", "-1", "101", "abc", "1.5", "9" * 40, ""])
def test_bad_limits_are_validation_errors(client, user, limit):
    response = client.get(
        "/api/auth/events", headers=bearer(user["access_token"]), query_string={"limit": limit}
    )
    assert response.status_code == 422
    assert response.get_json()["code"] == "validation_error"
    assert "limit" in response.get_json()["errors"]


def test_events_require_a_token(client):
    response = client.get("/api/auth/events", query_string={"limit": "abc"})
    assert response.status_code == 401


def test_password_events_are_listed(client, user, clock):
    """The password use cases write their events too; GET /events shows them to the owner."""
    requested = client.post("/api/auth/forgot-password", json={"email": "alice@example.com"})
    assert requested.status_code == 202
    clock.advance(1)
    changed = client.post(
        "/api/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "a whole new passphrase"},
        headers=bearer(user["access_token"]),
    )
    assert changed.status_code == 200, changed.get_json()
    events = _events(client, changed.get_json())
    assert [e["type"] for e in events] == [
        "password_changed",
        "password_reset_requested",
        "login_succeeded",
    ]
    assert events[0]["session_id"] == events[2]["session_id"]  # the session was kept
