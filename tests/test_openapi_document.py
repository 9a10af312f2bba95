"""The OpenAPI document is a contract generated clients can use: a short operationId on every
operation, every error an operation answers documented as a Problem (with Retry-After on
429), servers, and limits and enums that are the ones the service enforces."""

from __future__ import annotations

import json

import pytest

from authsvc.services.events import EVENT_TYPES

OPERATION_IDS = {
    ("post", "/api/auth/register"): "register",
    ("post", "/api/auth/login"): "login",
    ("post", "/api/auth/refresh"): "refreshToken",
    ("post", "/api/auth/logout"): "logout",
    ("post", "/api/auth/logout-all"): "logoutAll",
    ("post", "/api/auth/forgot-password"): "forgotPassword",
    ("post", "/api/auth/reset-password"): "resetPassword",
    ("post", "/api/auth/change-password"): "changePassword",
    ("get", "/api/auth/me"): "getMe",
    ("get", "/api/auth/sessions"): "listSessions",
    ("delete", "/api/auth/sessions/{session_id}"): "revokeSession",
    ("get", "/api/auth/events"): "listEvents",
    ("post", "/api/auth/introspect"): "introspectToken",
    ("get", "/.well-known/oauth-authorization-server"): "getServerMetadata",
    ("get", "/.well-known/jwks.json"): "getJwks",
    ("get", "/healthz"): "health",
    ("get", "/readyz"): "ready",
    ("post", "/api/auth/verify-email"): "verifyEmail",
    ("post", "/api/auth/resend-verification"): "resendVerification",
    ("post", "/api/auth/change-email"): "changeEmail",
    ("post", "/api/auth/confirm-email-change"): "confirmEmailChange",
    ("delete", "/api/auth/me"): "deleteMe",
    ("get", "/api/auth/me/export"): "exportMe",
    ("get", "/api/admin/users"): "adminListUsers",
    ("get", "/api/admin/users/{user_id}"): "adminGetUser",
    ("post", "/api/admin/users/{user_id}/disable"): "adminDisableUser",
    ("post", "/api/admin/users/{user_id}/enable"): "adminEnableUser",
    ("delete", "/api/admin/users/{user_id}"): "adminDeleteUser",
    ("post", "/api/admin/users/{user_id}/logout"): "adminLogoutUser",
    ("post", "/api/admin/users/{user_id}/unlock"): "adminUnlockUser",
}
PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture
def spec(client):
    return client.get("/api/openapi.json").get_json()


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method, path, operation


def test_every_operation_has_its_short_operation_id(spec):
    found = {(method, path): op.get("operationId") for method, path, op in _operations(spec)}
    assert found == OPERATION_IDS


def test_every_error_response_is_a_problem(spec):
    problem = spec["components"]["schemas"]["Problem"]
    assert problem["additionalProperties"] is True  # RFC 9457 extension members
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    for method, path, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if "$ref" in response:
                name = response["$ref"].rsplit("/", 1)[1]
                response = spec["components"]["responses"][name]
            if status == "default" or int(status) >= 400:
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": PROBLEM_REF}, (method, path, status)
            if status == "429":
                assert response["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_servers_are_listed(spec, make_app):
    assert spec["servers"] == [{"url": "/"}]
    public = make_app(PUBLIC_URL="https://auth.example.org").test_client()
    servers = public.get("/api/openapi.json").get_json()["servers"]
    assert servers == [{"url": "https://auth.example.org"}]


def test_limits_and_enums_are_the_enforced_ones(spec, client):
    schemas = spec["components"]["schemas"]
    for component, field in [
        ("RegisterArgs", "password"),
        ("LoginArgs", "password"),
        ("ResetPasswordArgs", "new_password"),
        ("ChangePasswordArgs", "new_password"),
        ("ChangePasswordArgs", "current_password"),
    ]:
        assert schemas[component]["properties"][field]["maxLength"] == 256  # PASSWORD_MAX_LENGTH
    assert schemas["Event"]["properties"]["type"]["enum"] == sorted(EVENT_TYPES)
    too_long = client.post(
        "/api/auth/register", json={"email": "long@example.com", "password": "x" * 257}
    )
    assert too_long.status_code == 422


def test_no_description_cites_a_document_users_do_not_have(spec):
    text = json.dumps(spec)
    assert "SPEC" not in text
    assert "§" not in text


def _documented(spec, method, path):
    return set(spec["paths"][path][method]["responses"])


def test_the_errors_each_operation_answers_are_documented(spec, client):
    """Drive each operation into its errors and find each status in its document."""
    body_ops = [(m, p) for m, p, op in _operations(spec) if "requestBody" in op]
    for method, path in body_ops:
        documented = _documented(spec, method, path)
        call = getattr(client, method)
        answers = {
            str(call(path, data=b"{bad", content_type="application/json").status_code),
            str(call(path, data=b"<a/>", content_type="application/xml").status_code),
            str(call(path, data=b"x" * 70_000, content_type="application/json").status_code),
        }
        assert answers <= documented, (method, path, answers - documented)
    for method, path, op in _operations(spec):
        if op.get("security") == [{"bearerAuth": []}]:
            answer = getattr(client, method)(path.replace("{session_id}", "x")).status_code
            assert answer == 401
            assert "401" in _documented(spec, method, path)
