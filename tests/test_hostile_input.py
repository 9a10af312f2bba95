"""Hostile input: every malformed request gets a 4xx problem+json, never a 500, and loses
nothing (the account and its sessions still work afterwards)."""

from __future__ import annotations

import json

import pytest

from conftest import PASSWORD, bearer

JSON_ENDPOINTS = ["/api/auth/register", "/api/auth/login", "/api/auth/refresh", "/api/auth/logout"]

RAW_BODIES = [
    b"{bad",
    b'{"email": ',
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"123",
    b"true",
    b"\xff\xfe\xfd",  # not UTF-8
    b'{"email": "\\ud800@example.com", "password": "\\udfff", "refresh_token": "\\ud800"}',
    b'{"email": "a\\u0000@example.com", "password": "p\\u0000", "refresh_token": "\\u0000"}',
    b"[" * 30000 + b"]" * 30000,  # deep nesting within the size limit
    b'{"email": {"$ne": null}, "password": {"$gt": ""}, "refresh_token": {"$ne": 1}}',
    b'{"email": "a@example.com", "email": "b@example.com", "password": "x"}',
    b'{"email": 1e999, "password": NaN, "refresh_token": Infinity}',
]

FIELD_VALUES = [
    {},
    {"email": None, "password": None, "refresh_token": None},
    {"email": 123, "password": 456, "refresh_token": 789},
    {"email": ["a@example.com"], "password": {"x": 1}, "refresh_token": [1]},
    {"email": True, "password": False, "refresh_token": True},
    {"email": "x" * 100_000, "password": "y" * 100_000, "refresh_token": "z" * 100_000},
    {"email": "a@example.com", "password": PASSWORD, "refresh_token": "t", "extra": "field"},
    {"email": "ü" * 300 + "@example.com", "password": "🔑" * 300, "refresh_token": "🔑" * 40},
    {"email": "a" * 65 + "@example.com", "password": PASSWORD, "refresh_token": "a" * 129},
    {"email": "user@" + "a" * 250 + ".com", "password": PASSWORD, "refresh_token": "é"},
    {"email": "<script>@example.com", "password": "' OR 1=1 --", "refresh_token": "' OR 1=1 --"},
    {"email": "\u202eevil@example.com", "password": "\u200b" * 20, "refresh_token": "\u200b"},
]


def assert_problem(response, *allowed):
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
    if allowed:
        assert response.status_code in allowed, response.get_json()
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == response.status_code
    return body


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
@pytest.mark.parametrize("raw", RAW_BODIES, ids=lambda raw: repr(raw[:20]))
def test_malformed_bodies(client, endpoint, raw):
    response = client.post(endpoint, data=raw, content_type="application/json")
    if endpoint == "/api/auth/logout" and response.status_code == 204:
        return  # logout is idempotent; a body it cannot use is not a reason to fail
    assert_problem(response, 400, 413, 422)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
@pytest.mark.parametrize("fields", FIELD_VALUES, ids=range(len(FIELD_VALUES)))
def test_wrong_fields(client, endpoint, fields):
    wanted = {
        "/api/auth/register": ["email", "password"],
        "/api/auth/login": ["email", "password"],
        "/api/auth/refresh": ["refresh_token"],
        "/api/auth/logout": ["refresh_token"],
    }[endpoint]
    payload = {k: v for k, v in fields.items() if k in wanted or k == "extra"}
    response = client.post(endpoint, json=payload)
    if response.status_code in (201, 204):
        return  # a register with an odd-but-valid email, or an idempotent logout
    body = assert_problem(response, 400, 401, 409, 413, 422)
    if response.status_code == 422:
        assert body["code"] in ("validation_error", "weak_password")


def test_missing_and_extra_fields_are_named(client):
    body = assert_problem(client.post("/api/auth/register", json={"extra": 1}), 422)
    assert set(body["errors"]) == {"email", "password", "extra"}
    assert body["code"] == "validation_error"


def test_wrong_types_are_named(client):
    body = assert_problem(client.post("/api/auth/login", json={"email": 5, "password": ["x"]}), 422)
    assert set(body["errors"]) == {"email", "password"}


def test_ten_megabyte_body_is_refused(client):
    big = json.dumps({"email": "a@example.com", "password": "x" * 10_000_000})
    body = assert_problem(
        client.post("/api/auth/register", data=big, content_type="application/json"), 413
    )
    assert body["code"] == "payload_too_large"


def test_non_json_bodies_are_refused(client):
    for content_type, data in [
        ("application/x-www-form-urlencoded", "email=a%40example.com&password=x"),
        ("multipart/form-data; boundary=x", "--x--"),
        ("application/xml", "<a/>"),
    ]:
        body = assert_problem(
            client.post("/api/auth/login", data=data, content_type=content_type), 415
        )
        assert body["code"] == "unsupported_media_type"


def test_no_body_at_all(client):
    body = assert_problem(client.post("/api/auth/login"), 422)
    assert body["code"] == "validation_error"


def test_unicode_email_registers_and_logs_in(client):
    response = client.post(
        "/api/auth/register", json={"email": "Zoë@Exämple.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    assert response.get_json()["user"]["email"] == "zoë@exämple.com"
    again = client.post("/api/auth/login", json={"email": "ZOË@exämple.com", "password": PASSWORD})
    assert again.status_code == 200


def test_very_long_emails(client):
    local = "a" * 64
    too_long = local + "@" + ".".join(["b" * 60] * 4) + ".com"  # > 254 characters
    body = assert_problem(
        client.post("/api/auth/register", json={"email": too_long, "password": PASSWORD}), 422
    )
    assert "email" in body["errors"]
    assert_problem(
        client.post(
            "/api/auth/register", json={"email": "a" * 65 + "@example.com", "password": PASSWORD}
        ),
        422,
    )


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer a.b.c",
        "Bearer " + "x" * 10_000,
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        "bearer ....",
        "Token abc",
        "Bearer ééé",
        "Bearer a b c",
    ],
)
def test_garbage_authorization_headers(client, header):
    body = assert_problem(client.get("/api/auth/me", headers={"Authorization": header}), 401)
    assert body["code"] in ("invalid_token", "missing_token")


def test_wrong_methods_and_paths(client):
    assert_problem(client.get("/api/auth/login"), 405)
    assert_problem(client.put("/api/auth/refresh", json={}), 405)
    assert_problem(client.get("/api/auth/nothing-here"), 404)
    assert_problem(client.get("/%ff%fe"), 404)


def test_hostile_input_loses_nothing(client, user):
    for raw in RAW_BODIES:
        client.post("/api/auth/refresh", data=raw, content_type="application/json")
        client.post("/api/auth/login", data=raw, content_type="application/json")
    me = client.get("/api/auth/me", headers=bearer(user["access_token"]))
    assert me.status_code == 200
    assert (
        client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]}).status_code
        == 200
    )


def test_every_blueprint_parses_json_strictly(app):
    from authsvc.api.parsing import StrictJSONParser

    for name, blueprint in app.blueprints.items():
        if hasattr(blueprint, "ARGUMENTS_PARSER"):  # flask-smorest blueprints
            assert isinstance(blueprint.ARGUMENTS_PARSER, StrictJSONParser), name
