"""Refresh-token rotation: one successor, safe retries in the grace window, reuse kills the
session, logout and logout-all, lifetimes."""

from __future__ import annotations

from sqlalchemy import func, select

from authsvc.models import AuthSession, RefreshToken, SecurityEvent
from conftest import bearer


def refresh(client, token):
    return client.post("/api/auth/refresh", json={"refresh_token": token})


def live_tokens(engine, session_id=None):
    query = (
        select(func.count())
        .select_from(RefreshToken)
        .where(RefreshToken.spent_at.is_(None), RefreshToken.revoked.is_(False))
    )
    if session_id is not None:
        query = query.where(RefreshToken.session_id == session_id)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_refresh_rotates(client, user):
    first = refresh(client, user["refresh_token"])
    assert first.status_code == 200
    pair = first.get_json()
    assert pair["refresh_token"] != user["refresh_token"]
    assert pair["token_type"] == "bearer"
    assert pair["user"] == user["user"]
    assert first.headers["Cache-Control"] == "no-store"
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    second = refresh(client, pair["refresh_token"])
    assert second.status_code == 200


def test_retry_within_grace_returns_the_same_successor(client, user, engine, clock):
    first = refresh(client, user["refresh_token"]).get_json()
    clock.advance(5)  # inside the default 10 s window
    retry = refresh(client, user["refresh_token"])
    assert retry.status_code == 200
    assert retry.get_json()["refresh_token"] == first["refresh_token"]
    assert live_tokens(engine) == 1
    # The successor is still the live token of the chain.
    assert refresh(client, first["refresh_token"]).status_code == 200


def test_reuse_after_grace_revokes_the_whole_session(client, user, engine, clock):
    first = refresh(client, user["refresh_token"]).get_json()
    second = refresh(client, first["refresh_token"]).get_json()
    clock.advance(11)
    reused = refresh(client, user["refresh_token"])
    assert reused.status_code == 401
    assert reused.get_json()["code"] == "refresh_token_reused"
    assert reused.headers["WWW-Authenticate"].startswith("Bearer")
    # The newest token of the chain no longer works, nor the session's access tokens.
    newest = refresh(client, second["refresh_token"])
    assert newest.status_code == 401
    assert newest.get_json()["code"] == "invalid_token"
    assert client.get("/api/auth/me", headers=bearer(second["access_token"])).status_code == 401
    assert live_tokens(engine) == 0
    with engine.connect() as conn:
        events = conn.execute(select(SecurityEvent.type)).scalars().all()
        revoked = conn.execute(select(AuthSession.revoke_reason)).scalar_one()
    assert "refresh_token_reused" in events
    assert revoked == "refresh_token_reused"


def test_token_two_rotations_behind_is_reuse_even_within_grace(client, user):
    first = refresh(client, user["refresh_token"]).get_json()
    second = refresh(client, first["refresh_token"]).get_json()
    stale = refresh(client, user["refresh_token"])  # its successor has itself been spent
    assert stale.status_code == 401
    assert stale.get_json()["code"] == "refresh_token_reused"
    assert refresh(client, second["refresh_token"]).status_code == 401


def test_reuse_in_one_session_leaves_other_sessions_alone(client, user, login, clock):
    other = login()
    refresh(client, user["refresh_token"])
    clock.advance(60)
    assert refresh(client, user["refresh_token"]).status_code == 401
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_grace_window_is_configurable(make_app):
    client = make_app(REFRESH_REUSE_GRACE=0).test_client()
    pair = client.post(
        "/api/auth/register",
        json={"email": "zero@example.com", "password": "correct horse battery staple"},
    ).get_json()
    assert refresh(client, pair["refresh_token"]).status_code == 200
    again = refresh(client, pair["refresh_token"])
    assert again.status_code == 401
    assert again.get_json()["code"] == "refresh_token_reused"


def test_unknown_garbage_and_expired_tokens_are_invalid(client, user, clock):
    for token in ["nope", "x" * 43, "x" * 512]:
        response = refresh(client, token)
        assert response.status_code == 401
        assert response.get_json()["code"] == "invalid_token"
    clock.advance(7 * 24 * 3600 + 1)
    expired = refresh(client, user["refresh_token"])
    assert expired.status_code == 401
    assert expired.get_json()["code"] == "invalid_token"


def test_rotation_renews_expiry_but_never_past_the_absolute_lifetime(make_app, clock):
    client = make_app(REFRESH_TOKEN_TTL=3600, SESSION_MAX_LIFETIME=3 * 3600).test_client()
    pair = client.post(
        "/api/auth/register",
        json={"email": "life@example.com", "password": "correct horse battery staple"},
    ).get_json()
    assert pair["refresh_expires_in"] == 3600
    token = pair["refresh_token"]
    for _ in range(2):  # at 50 min and 100 min: a full hour each time
        clock.advance(3000)
        pair = refresh(client, token).get_json()
        assert pair["refresh_expires_in"] == 3600
        token = pair["refresh_token"]
    clock.advance(3000)  # 150 min: only 30 min of the 3 h lifetime are left
    pair = refresh(client, token).get_json()
    assert 1790 <= pair["refresh_expires_in"] <= 1800
    clock.advance(1801)
    assert refresh(client, pair["refresh_token"]).status_code == 401


def test_logout_ends_the_session_and_is_idempotent(client, user, login):
    other = login()
    first = client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]})
    assert first.status_code == 204
    assert first.get_data() == b""
    again = client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]})
    assert again.status_code == 204
    unknown = client.post("/api/auth/logout", json={"refresh_token": "never-issued"})
    assert unknown.status_code == 204
    assert refresh(client, user["refresh_token"]).status_code == 401
    assert client.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 401
    assert client.get("/api/auth/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_all_ends_every_session_and_counts_them(client, user, login, register):
    second, third = login(), login()
    bystander = register(email="bystander@example.com")
    response = client.post("/api/auth/logout-all", headers=bearer(second["access_token"]))
    assert response.status_code == 200
    assert response.get_json() == {"revoked_sessions": 3}
    for pair in (user, second, third):
        assert refresh(client, pair["refresh_token"]).status_code == 401
        assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    assert refresh(client, bystander["refresh_token"]).status_code == 200


def test_logout_all_requires_a_bearer_token(client, user):
    response = client.post("/api/auth/logout-all")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    refresh_as_bearer = client.post("/api/auth/logout-all", headers=bearer(user["refresh_token"]))
    assert refresh_as_bearer.status_code == 401


def test_refresh_token_is_not_an_access_token_and_vice_versa(client, user):
    as_access = client.get("/api/auth/me", headers=bearer(user["refresh_token"]))
    assert as_access.status_code == 401
    assert as_access.get_json()["code"] == "invalid_token"
    as_refresh = refresh(client, user["access_token"])
    assert as_refresh.status_code == 401
    assert as_refresh.get_json()["code"] == "invalid_token"
    # Neither attempt damaged the session.
    assert refresh(client, user["refresh_token"]).status_code == 200


def test_access_token_expires(client, user, clock):
    # Verified once (and remembered by the worker): expiry is still checked at every use.
    assert client.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 200
    clock.advance(1800 + 11)  # TTL plus more than the 10 s leeway
    response = client.get("/api/auth/me", headers=bearer(user["access_token"]))
    assert response.status_code == 401
    assert response.get_json()["code"] == "token_expired"
