"""The schemas are the API's shape: marshmallow loads every body and dumps every response,
and the OpenAPI document shows what the service checks."""

from __future__ import annotations

from authsvc.api import schemas
from conftest import PASSWORD, bearer


def test_invalid_bodies_still_get_marshmallows_422(client):
    for body, field in [
        ({}, "refresh_token"),
        ({"refresh_token": 5}, "refresh_token"),
        ({"refresh_token": "x", "extra": 1}, "extra"),
        ({"refresh_token": "a\x00b"}, "refresh_token"),
        ({"refresh_token": "x" * 513}, "refresh_token"),
    ]:
        r = client.post("/api/auth/refresh", json=body)
        assert r.status_code == 422, body
        assert r.get_json()["code"] == "validation_error"
        assert field in r.get_json()["errors"], body


def test_responses_keep_the_documented_shape(client):
    pair = client.post(
        "/api/auth/register",
        json={"email": "shape@example.com", "password": PASSWORD, "name": "Shape"},
    ).get_json()
    assert set(pair) == set(schemas.TokenPairSchema().fields)
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"])).get_json()
    # Three ways to the same user: the ORM (register), the bearer lookup, the rotation.
    assert me == pair["user"]
    rotated = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.get_json()["user"] == me
    assert set(me) == {"id", "email", "name", "created_at", "email_verified"}
    spec = client.get("/api/openapi.json").get_json()
    assert set(spec["components"]["schemas"]["TokenPair"]["properties"]) == set(pair)
    assert set(spec["components"]["schemas"]["User"]["properties"]) == set(me)


def test_the_document_shows_email_formats_and_the_configured_password_minimum(make_app):
    """Clients (and the fuzzer) see what the service checks beyond the schemas' lengths."""
    for minimum in (12, 20):
        spec = make_app(PASSWORD_MIN_LENGTH=minimum).test_client().get("/api/openapi.json")
        documented = spec.get_json()["components"]["schemas"]
        for component in ("RegisterArgs", "LoginArgs", "ForgotPasswordArgs"):
            assert documented[component]["properties"]["email"]["format"] == "email"
        for component, field in schemas.NEW_PASSWORD_FIELDS.items():
            assert documented[component]["properties"][field]["minLength"] == minimum
        # A password being checked is not a new one: any length may be tried.
        assert "minLength" not in documented["LoginArgs"]["properties"]["password"]
        assert "minLength" not in documented["ChangePasswordArgs"]["properties"]["current_password"]
