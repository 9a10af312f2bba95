"""GET /sessions and DELETE /sessions/{id}: a user's devices, and logging one of them out."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from authsvc.models import AuthSession, SecurityEvent
from conftest import PASSWORD, bearer

SESSION_FIELDS = {
    "id",
    "created_at",
    "last_used_at",
    "expires_at",
    "user_agent",
    "ip_address",
    "current",
}


def _login(client, email="alice@example.com", agent="test-agent"):
    response = client.post(
        "/api/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _sessions(client, pair):
    response = client.get("/api/auth/sessions", headers=bearer(pair["access_token"]))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def _sid(engine, refresh_token):
    from authsvc.models import RefreshToken
    from authsvc.security.tokens import hash_token

    with engine.connect() as conn:
        return str(
            conn.execute(
                select(RefreshToken.session_id).where(
                    RefreshToken.token_hash == hash_token(refresh_token)
                )
            ).scalar_one()
        )


def test_lists_active_sessions_newest_first_with_the_current_one_marked(
    client, user, clock, engine
):
    clock.advance(60)
    laptop = _login(client, agent="laptop")
    clock.advance(60)
    phone = _login(client, agent="phone")

    listed = _sessions(client, laptop)
    assert [s["user_agent"] for s in listed][:2] == ["phone", "laptop"]
    assert all(set(s) == SESSION_FIELDS for s in listed)
    assert [s["current"] for s in listed] == [False, True, False]
    assert [s["id"] for s in listed] == [
        _sid(engine, phone["refresh_token"]),
        _sid(engine, laptop["refresh_token"]),
        _sid(engine, user["refresh_token"]),
    ]
    assert [s["current"] for s in _sessions(client, phone)] == [True, False, False]
    newest = listed[0]
    assert newest["ip_address"] == "127.0.0.1"
    assert newest["created_at"] == newest["last_used_at"]
    assert newest["expires_at"] > newest["created_at"]


def test_revoked_expired_and_other_users_sessions_are_not_listed(client, user, register, clock):
    bob = register(email="bob@example.com")
    logged_out = _login(client, agent="logged out")
    assert (
        client.post(
            "/api/auth/logout", json={"refresh_token": logged_out["refresh_token"]}
        ).status_code
        == 204
    )
    listed = _sessions(client, user)
    assert len(listed) == 1 and listed[0]["current"]
    assert len(_sessions(client, bob)) == 1

    # A session nobody refreshed for REFRESH_TOKEN_TTL has ended; a fresh login still lists.
    clock.advance(7 * 24 * 3600 + 1)
    fresh = _login(client, agent="fresh")
    assert [s["user_agent"] for s in _sessions(client, fresh)] == ["fresh"]


def test_session_past_its_absolute_lifetime_is_not_listed(make_app, clock, engine):
    client = make_app(REFRESH_TOKEN_TTL=3600, SESSION_MAX_LIFETIME=3600).test_client()
    client.post("/api/auth/register", json={"email": "a@example.com", "password": PASSWORD})
    old = client.post(
        "/api/auth/login", json={"email": "a@example.com", "password": PASSWORD}
    ).get_json()
    clock.advance(3000)
    new = client.post(
        "/api/auth/login", json={"email": "a@example.com", "password": PASSWORD}
    ).get_json()
    assert len(_sessions(client, new)) == 3
    clock.advance(700)
    assert len(_sessions(client, new)) == 1
    assert client.get("/api/auth/sessions", headers=bearer(old["access_token"])).status_code == 401


def test_expires_at_follows_rotation(client, user, clock):
    before = _sessions(client, user)[0]
    clock.advance(3600)
    rotated = client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    after = _sessions(client, rotated.get_json())[0]
    assert after["id"] == before["id"]
    assert after["created_at"] == before["created_at"]
    assert after["last_used_at"] > before["last_used_at"]
    assert after["expires_at"] > before["expires_at"]


def test_delete_own_session_revokes_it_at_once(client, user, engine):
    phone = _login(client, agent="phone")
    phone_id = _sid(engine, phone["refresh_token"])

    response = client.delete(f"/api/auth/sessions/{phone_id}", headers=bearer(user["access_token"]))
    assert response.status_code == 204
    assert response.get_data() == b""

    me = client.get("/api/auth/me", headers=bearer(phone["access_token"]))
    assert me.status_code == 401
    assert me.get_json()["code"] == "invalid_token"
    refused = client.post("/api/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "invalid_token"
    assert [s["current"] for s in _sessions(client, user)] == [True]

    with engine.connect() as conn:
        reason = conn.execute(
            select(AuthSession.revoke_reason).where(AuthSession.id == uuid.UUID(phone_id))
        ).scalar_one()
        event = conn.execute(
            select(SecurityEvent).where(SecurityEvent.type == "session_revoked")
        ).one()
    assert reason == "session_revoked"
    assert str(event.session_id) == phone_id
    assert event.details == {"by_session_id": _sid(engine, user["refresh_token"])}


def test_deleting_the_current_session_logs_the_caller_out(client, user, engine):
    own = _sid(engine, user["refresh_token"])
    response = client.delete(f"/api/auth/sessions/{own}", headers=bearer(user["access_token"]))
    assert response.status_code == 204
    assert client.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 401


def test_deleting_twice_is_not_found_the_second_time(client, user, engine):
    phone = _login(client)
    url = f"/api/auth/sessions/{_sid(engine, phone['refresh_token'])}"
    assert client.delete(url, headers=bearer(user["access_token"])).status_code == 204
    again = client.delete(url, headers=bearer(user["access_token"]))
    assert again.status_code == 404
    assert again.get_json()["code"] == "not_found"


@pytest.mark.parametrize(
    "session_id",
    [
        "not-a-uuid",
        "1" * 300,
        "%00",
        "00000000-0000-0000-0000-000000000000",
        "' OR 1=1 --",
        "%F0%9F%94%91",
        "%ED%A0%80",  # a lone surrogate, UTF-8-encoded
    ],
)
def test_someone_elses_and_unknown_ids_get_the_same_404(client, user, register, engine, session_id):
    bob = register(email="bob@example.com")
    bobs = _sid(engine, bob["refresh_token"])
    headers = bearer(user["access_token"])

    theirs = client.delete(f"/api/auth/sessions/{bobs}", headers=headers)
    unknown = client.delete(f"/api/auth/sessions/{uuid.uuid4()}", headers=headers)
    garbage = client.delete(f"/api/auth/sessions/{session_id}", headers=headers)
    for response in (theirs, unknown, garbage):
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"
        assert response.get_data() == theirs.get_data()
    assert theirs.get_json()["code"] == "not_found"
    # Bob's session is untouched.
    assert client.get("/api/auth/me", headers=bearer(bob["access_token"])).status_code == 200


def test_sessions_endpoints_require_a_live_access_token(client, user, engine):
    sid = _sid(engine, user["refresh_token"])
    for method, url in (("get", "/api/auth/sessions"), ("delete", f"/api/auth/sessions/{sid}")):
        response = getattr(client, method)(url)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        forged = getattr(client, method)(url, headers=bearer(user["refresh_token"]))
        assert forged.status_code == 401
    assert client.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 200


def test_session_delete_is_in_the_openapi_document(client):
    spec = client.get("/api/openapi.json").get_json()
    paths = spec["paths"]
    assert "get" in paths["/api/auth/sessions"]
    operation = paths["/api/auth/sessions/{session_id}"]["delete"]
    assert {"204", "401", "404"} <= set(operation["responses"])
    assert operation["security"] == [{"bearerAuth": []}]
    assert "limit" in {p["name"] for p in paths["/api/auth/events"]["get"]["parameters"]}


def test_refresh_expires_in_never_passes_the_absolute_lifetime(client, user, clock, engine):
    """Rotation renews the 7 days, but the session ends 30 days after login regardless."""
    day = 24 * 3600
    assert user["refresh_expires_in"] == 7 * day
    pair = user
    for _ in range(4):  # days 5, 10, 15, 20: each rotation still gets the full 7 days...
        clock.advance(5 * day)
        response = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert response.status_code == 200, response.get_json()
        pair = response.get_json()
        assert pair["refresh_expires_in"] == 7 * day
    clock.advance(6 * day)  # ...but on day 26 only 4 days of the 30 are left.
    pair = client.post(
        "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    ).get_json()
    assert 4 * day - 5 <= pair["refresh_expires_in"] <= 4 * day
    listed = _sessions(client, pair)[0]
    created, expires = (datetime.fromisoformat(listed[k]) for k in ("created_at", "expires_at"))
    assert expires - created == timedelta(days=30)
    with engine.connect() as conn:
        row = conn.execute(select(AuthSession.expires_at, AuthSession.absolute_expires_at)).one()
    assert row.expires_at == row.absolute_expires_at

    clock.advance(4 * day - 60)  # a minute before the end: one more rotation, 60 s left
    pair = client.post(
        "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    ).get_json()
    assert 55 <= pair["refresh_expires_in"] <= 60
    clock.advance(61)
    ended = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert ended.status_code == 401
    assert ended.get_json()["code"] == "invalid_token"
