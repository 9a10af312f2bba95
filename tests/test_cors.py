"""CORS from CORS_ORIGINS: exact origins only, credentials only for them, never `*`."""

from __future__ import annotations

import pytest

from authsvc import create_app
from authsvc.config import ConfigError
from conftest import PASSWORD

APP_ORIGIN = "https://app.example.org"


@pytest.fixture
def cors_client(make_app):
    return make_app(CORS_ORIGINS=f"{APP_ORIGIN}, http://localhost:3000").test_client()


def _login(client, origin):
    return client.post(
        "/api/auth/login",
        json={"email": "alice@example.com", "password": PASSWORD},
        headers={"Origin": origin},
    )


def test_listed_origin_gets_its_origin_and_credentials(cors_client, user):
    response = _login(cors_client, APP_ORIGIN)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in exposed
    assert "X-Request-ID" in exposed


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.org",
        "https://app.example.org.evil.example",
        "http://app.example.org",  # another scheme is another origin
        "https://app.example.org:8443",
        "null",
    ],
)
def test_other_origins_get_no_cors_headers(cors_client, user, origin):
    response = _login(cors_client, origin)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]


def test_preflight_for_a_listed_origin(cors_client):
    response = cors_client.options(
        "/api/auth/sessions/00000000-0000-0000-0000-000000000000",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "DELETE" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_preflight_for_another_origin_is_not_allowed(cors_client):
    response = cors_client.options(
        "/api/auth/login",
        headers={"Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


def test_without_cors_origins_there_are_no_cors_headers(client, user):
    response = _login(client, APP_ORIGIN)
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    "origins", ["*", "https://app.example.org/", "https://app.example.org/login", "app.example.org"]
)
def test_wildcards_and_non_origins_are_refused_at_start(base_config, origins):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        create_app({**base_config, "CORS_ORIGINS": origins})
