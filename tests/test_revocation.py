"""Immediate revocation: an access token whose session has ended is refused on the very next
request (logout, logout-all, session delete, refresh-token reuse), not 30 minutes later."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select

from authsvc.models import RefreshToken
from authsvc.security.tokens import hash_token
from conftest import bearer


def _me(client, pair):
    return client.get("/api/auth/me", headers=bearer(pair["access_token"]))


def _assert_revoked(client, pair):
    response = _me(client, pair)
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _session_id(engine, pair):
    with engine.connect() as conn:
        return conn.execute(
            select(RefreshToken.session_id).where(
                RefreshToken.token_hash == hash_token(pair["refresh_token"])
            )
        ).scalar_one()


def test_logout_refuses_the_sessions_access_token_at_once(client, user, login):
    other = login()
    assert _me(client, user).status_code == 200
    assert (
        client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]}).status_code
        == 204
    )
    _assert_revoked(client, user)
    assert _me(client, other).status_code == 200  # another device is unaffected


def test_logout_all_refuses_every_access_token_at_once(client, user, login, register):
    laptop, phone = login(), login()
    bob = register(email="bob@example.com")
    response = client.post("/api/auth/logout-all", headers=bearer(laptop["access_token"]))
    assert response.status_code == 200
    assert response.get_json() == {"revoked_sessions": 3}
    for pair in (user, laptop, phone):
        _assert_revoked(client, pair)
    assert _me(client, bob).status_code == 200


def test_session_delete_refuses_its_access_token_at_once(client, user, login, engine):
    phone = login()
    response = client.delete(
        f"/api/auth/sessions/{_session_id(engine, phone)}", headers=bearer(user["access_token"])
    )
    assert response.status_code == 204
    _assert_revoked(client, phone)
    assert _me(client, user).status_code == 200


def test_refresh_token_reuse_refuses_the_chains_access_tokens_at_once(client, user, clock):
    rotated = client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert rotated.status_code == 200
    rotated = rotated.get_json()
    clock.advance(11)  # past the 10 s grace window
    reused = client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert reused.status_code == 401
    assert reused.get_json()["code"] == "refresh_token_reused"
    # Both the access token issued at login and the one from the rotation are dead.
    _assert_revoked(client, user)
    _assert_revoked(client, rotated)
    refused = client.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert refused.status_code == 401


@pytest.mark.parametrize("endpoint", ["/api/auth/sessions", "/api/auth/events", "/api/auth/me"])
def test_every_bearer_endpoint_checks_the_session(client, user, endpoint):
    client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]})
    response = client.get(endpoint, headers=bearer(user["access_token"]))
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_token"


def test_logout_all_with_a_revoked_token_is_refused(client, user):
    client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]})
    response = client.post("/api/auth/logout-all", headers=bearer(user["access_token"]))
    assert response.status_code == 401


def test_access_token_of_a_deleted_user_is_refused(client, user, engine):
    from authsvc.models import User

    with engine.begin() as conn:
        conn.execute(User.__table__.delete())
    _assert_revoked(client, user)


def _http(method, url, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


@pytest.mark.slow
def test_revocation_is_seen_by_every_gunicorn_worker(live_server):
    """No per-process cache: each of several workers refuses the token after logout-all."""
    server = live_server(workers=2, threads=1)
    status, pair = _http(
        "POST",
        f"{server.url}/api/auth/register",
        body={"email": "alice@example.com", "password": "correct horse battery staple"},
    )
    assert status == 201
    for _ in range(4):
        assert _http("GET", f"{server.url}/api/auth/me", pair["access_token"])[0] == 200
    status, _ = _http("POST", f"{server.url}/api/auth/logout-all", pair["access_token"])
    assert status == 200
    for _ in range(6):  # enough requests to land on both workers
        status, problem = _http("GET", f"{server.url}/api/auth/me", pair["access_token"])
        assert (status, problem["code"]) == (401, "invalid_token")
