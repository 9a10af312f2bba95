"""Durations: outside production any of them may be 1 s (a front end exercising its refresh
flow with 5-second tokens) and a session may end before its refresh token would; production
keeps floors and says why it refuses."""

from __future__ import annotations

import jwt
import pytest

from authsvc.config import ConfigError, load_settings
from conftest import PASSWORD, production_settings

DURATIONS = ("ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "SESSION_MAX_LIFETIME", "PASSWORD_RESET_TTL")
PRODUCTION = {
    **production_settings("postgresql://db.example.org/authsvc"),
    "JWT_ALGORITHM": "HS256",
    "JWT_SECRET": "s" * 32,
}


def _load(**overrides):
    return load_settings(overrides, environ={}, instance_path="/nonexistent")


def test_every_duration_may_be_one_second_in_development():
    settings = _load(**dict.fromkeys(DURATIONS, 1))
    assert [getattr(settings, name) for name in DURATIONS] == [1, 1, 1, 1]


def test_a_session_may_end_before_its_refresh_token_would():
    day, week = 24 * 3600, 7 * 24 * 3600
    for base in ({}, PRODUCTION):
        settings = _load(**base, SESSION_MAX_LIFETIME=day, REFRESH_TOKEN_TTL=week)
        assert settings.SESSION_MAX_LIFETIME < settings.REFRESH_TOKEN_TTL


@pytest.mark.parametrize("name", DURATIONS)
def test_zero_is_refused_everywhere(name):
    with pytest.raises(ConfigError, match=f"{name} must be at least 1 s"):
        _load(**{name: 0})


@pytest.mark.parametrize("name", DURATIONS)
def test_production_keeps_its_floors_and_says_why(name):
    with pytest.raises(ConfigError) as info:
        _load(**PRODUCTION, **{name: 5})
    message = str(info.value)
    assert f"{name} must be at least 60 s in production: " in message
    _load(**PRODUCTION, **{name: 60})


def test_five_second_tokens_work_end_to_end(make_app, clock):
    client = make_app(ACCESS_TOKEN_TTL=5, SESSION_MAX_LIFETIME=3600).test_client()
    pair = client.post(
        "/api/auth/register", json={"email": "fast@example.com", "password": PASSWORD}
    ).get_json()
    assert pair["expires_in"] == 5
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 5
    # The refresh token is capped by the session's absolute lifetime (1 h < 7 days).
    assert pair["refresh_expires_in"] <= 3600
    clock.advance(5 + 10 + 1)  # past the lifetime and JWT_LEEWAY
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 401
    assert me.get_json()["code"] == "token_expired"
    refreshed = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200
    assert refreshed.get_json()["expires_in"] == 5
