"""Token introspection (RFC 7662) for registered service clients."""

from __future__ import annotations

import base64

import pytest

from conftest import bearer


@pytest.fixture
def service_client(app):
    output = app.test_cli_runner().invoke(args=["clients", "create", "--name", "orders api"])
    assert output.exit_code == 0, output.output
    lines = dict(line.split(":", 1) for line in output.output.splitlines() if ":" in line)
    return lines["client_id"].strip(), lines["client_secret"].strip()


def basic(client_id, secret):
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def introspect(client, token, credentials):
    return client.post(
        "/api/auth/introspect",
        data={"token": token, "token_type_hint": "access_token"},
        headers=basic(*credentials),
    )


def test_active_token_returns_its_claims(client, user, service_client):
    response = introspect(client, user["access_token"], service_client)
    assert response.status_code == 200
    body = response.get_json()
    assert body["active"] is True
    assert body["sub"] == user["user"]["id"]
    assert body["client_id"] == service_client[0]
    assert {"iss", "aud", "sid", "iat", "exp", "jti", "token_type"} <= set(body)
    assert response.headers["Cache-Control"] == "no-store"


def test_inactive_right_after_logout_all(client, user, service_client):
    assert introspect(client, user["access_token"], service_client).get_json()["active"]
    client.post("/api/auth/logout-all", headers=bearer(user["access_token"]))
    assert introspect(client, user["access_token"], service_client).get_json() == {"active": False}


def test_expired_malformed_and_refresh_tokens_are_inactive(client, user, service_client, clock):
    for token in ["garbage", "a.b.c", user["refresh_token"], "x" * 4000]:
        response = introspect(client, token, service_client)
        assert response.status_code == 200
        assert response.get_json() == {"active": False}
    clock.advance(1800 + 11)
    assert introspect(client, user["access_token"], service_client).get_json() == {"active": False}


def test_callers_must_authenticate(client, user, service_client):
    client_id, secret = service_client
    for headers in [
        {},
        basic(client_id, "wrong-secret"),
        basic("svc_unknown", secret),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        bearer(user["access_token"]),
    ]:
        response = client.post(
            "/api/auth/introspect", data={"token": user["access_token"]}, headers=headers
        )
        assert response.status_code == 401, headers
        assert response.get_json()["code"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert "active" not in response.get_json()


def test_revoked_client_is_refused(app, client, user, service_client):
    result = app.test_cli_runner().invoke(args=["clients", "revoke", service_client[0]])
    assert result.exit_code == 0, result.output
    assert introspect(client, user["access_token"], service_client).status_code == 401
    listed = app.test_cli_runner().invoke(args=["clients", "list"])
    assert "revoked" in listed.output


def test_revoke_takes_a_client_id_that_starts_with_a_dash(app):
    # Generated ids are base64url: a leading "-" is the id, not an unknown option.
    result = app.test_cli_runner().invoke(args=["clients", "revoke", "-xNoSuchClient"])
    assert result.exit_code == 1, result.output
    assert result.output == "Error: no active client -xNoSuchClient\n"


def test_client_secret_is_stored_hashed(engine, service_client):
    from sqlalchemy import select

    from authsvc.models import ServiceClient

    with engine.connect() as conn:
        stored = conn.execute(select(ServiceClient.secret_hash)).scalar_one()
    assert service_client[1] not in stored
    assert len(stored) == 64


def test_missing_token_is_a_validation_error(client, service_client):
    response = client.post("/api/auth/introspect", data={}, headers=basic(*service_client))
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
