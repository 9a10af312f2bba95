"""What a client may send as a body: JSON as application/json, any +json type, or text/plain
(what `fetch` sends for a string body with no headers); anything that is not one strict JSON
value is 400 invalid_json, never a 422 about missing fields and never a 500."""

from __future__ import annotations

import json

import pytest

from conftest import PASSWORD, bearer

FETCH_DEFAULT = "text/plain;charset=UTF-8"
JSON_ENDPOINTS = [
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/forgot-password",
    "/api/auth/reset-password",
]

NOT_STRICT_JSON = {
    "duplicate key": b'{"email": "a@example.com", "email": "b@example.com", "password": "x"}',
    "NaN": b'{"email": "a@example.com", "password": NaN}',
    "Infinity": b'{"refresh_token": Infinity, "email": -Infinity}',
    "deep nesting": b"[" * 30_000 + b"]" * 30_000,  # within MAX_CONTENT_LENGTH
    "not UTF-8": b'{"email": "\xff\xfe@example.com", "password": "x"}',
    "huge integer": b'{"email": ' + b"1" * 5000 + b', "refresh_token": 1}',
    "huge negative integer": b'{"token": -' + b"9" * 4400 + b"}",
    "not JSON": b"{bad",
}


def test_the_seed_frontends_fetch_without_headers_works(client, user):
    """refresh and logout as `fetch(url, {method: "POST", body: JSON.stringify(...)})`."""
    body = json.dumps({"refresh_token": user["refresh_token"]})
    refreshed = client.post("/api/auth/refresh", data=body, content_type=FETCH_DEFAULT)
    assert refreshed.status_code == 200, refreshed.get_json()
    pair = refreshed.get_json()
    logout = client.post(
        "/api/auth/logout",
        data=json.dumps({"refresh_token": pair["refresh_token"]}),
        content_type=FETCH_DEFAULT,
    )
    assert logout.status_code == 204
    again = client.post(
        "/api/auth/refresh",
        data=json.dumps({"refresh_token": pair["refresh_token"]}),
        content_type=FETCH_DEFAULT,
    )
    assert again.status_code == 401


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/vnd.api+json", "text/plain", FETCH_DEFAULT]
)
def test_json_is_read_from_each_accepted_type(client, content_type):
    body = json.dumps({"email": "types@example.com", "password": PASSWORD})
    registered = client.post("/api/auth/register", data=body, content_type=content_type)
    assert registered.status_code == 201, registered.get_json()
    logged_in = client.post("/api/auth/login", data=body, content_type=content_type)
    assert logged_in.status_code == 200
    me = client.get("/api/auth/me", headers=bearer(logged_in.get_json()["access_token"]))
    assert me.get_json()["email"] == "types@example.com"


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/html"],
)
def test_forms_and_other_types_stay_415(client, content_type):
    response = client.post("/api/auth/login", data=b"email=a&password=b", content_type=content_type)
    assert response.status_code == 415
    assert response.get_json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
@pytest.mark.parametrize("raw", list(NOT_STRICT_JSON.values()), ids=list(NOT_STRICT_JSON))
@pytest.mark.parametrize("content_type", ["application/json", FETCH_DEFAULT])
def test_bodies_that_are_not_strict_json_are_400_invalid_json(client, endpoint, raw, content_type):
    response = client.post(endpoint, data=raw, content_type=content_type)
    assert response.status_code == 400, (response.status_code, response.get_data()[:300])
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "invalid_json"
    assert body["status"] == 400
    assert "errors" not in body  # not a schema failure: nothing was loaded


def test_the_reason_is_named(client):
    response = client.post(
        "/api/auth/login",
        data=NOT_STRICT_JSON["duplicate key"],
        content_type="application/json",
    )
    assert "duplicate key 'email'" in response.get_json()["detail"]


def test_an_empty_body_still_names_the_missing_fields(client):
    for content_type in ("application/json", FETCH_DEFAULT):
        response = client.post("/api/auth/login", data=b"", content_type=content_type)
        assert response.status_code == 422
        assert set(response.get_json()["errors"]) == {"email", "password"}


def test_per_account_limits_read_text_plain_bodies_too(make_app):
    """A body sent as text/plain must not slip past the limits keyed on its email."""
    client = make_app(
        RATELIMIT_ENABLED=True,
        RATELIMIT_LOGIN_PER_IP="100/minute",
        RATELIMIT_LOGIN_PER_ACCOUNT="2/minute",
        LOGIN_THROTTLE_FREE_ATTEMPTS=100,
    ).test_client()
    body = json.dumps({"email": "limited@example.com", "password": "wrong password!"})
    answers = [
        client.post("/api/auth/login", data=body, content_type=FETCH_DEFAULT).status_code
        for _ in range(3)
    ]
    assert answers == [401, 401, 429]
