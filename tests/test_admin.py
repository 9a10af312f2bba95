"""Operator controls: the admin API (service clients with the admin scope only; never a user
token), the `flask users …` CLI, disabled accounts (a live access token refused at once),
and every admin action on the record with the acting client."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from sqlalchemy import select

from authsvc.models import SecurityEvent
from conftest import PASSWORD, bearer

EMAIL = "alice@example.com"


def make_client(app, *scopes):
    args = ["clients", "create", "--name", "svc"]
    for scope in scopes:
        args += ["--scope", scope]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    values = dict(
        line.split(":", 1) for line in result.output.splitlines() if line.startswith("client_")
    )
    return values["client_id"].strip(), values["client_secret"].strip()


def basic(credentials):
    client_id, secret = credentials
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def admin(app):
    return basic(make_client(app, "admin"))


def events(engine, event_type):
    with engine.connect() as conn:
        return conn.execute(
            select(SecurityEvent.user_id, SecurityEvent.details).where(
                SecurityEvent.type == event_type
            )
        ).all()


def operations(user_id):
    base = f"/api/admin/users/{user_id}"
    return [
        ("get", "/api/admin/users"),
        ("get", base),
        ("post", f"{base}/disable"),
        ("post", f"{base}/enable"),
        ("post", f"{base}/logout"),
        ("post", f"{base}/unlock"),
        ("delete", base),
    ]


def test_admin_api_is_refused_without_the_admin_scope(app, client, user):
    introspect_only = basic(make_client(app))
    for method, path in operations(user["user"]["id"]):
        call = getattr(client, method)
        anonymous = call(path)
        assert anonymous.status_code == 401, path
        assert anonymous.get_json()["code"] == "invalid_client"
        for headers in (introspect_only, bearer(user["access_token"]), bearer("junk")):
            refused = call(path, headers=headers)
            assert refused.status_code == 403, (path, headers)
            assert refused.get_json()["code"] == "insufficient_scope"
            assert refused.headers["Content-Type"] == "application/problem+json"
        wrong = call(path, headers=basic(("svc_nope", "wrong")))
        assert wrong.status_code == 401
    # Nothing happened to the account.
    assert client.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 200


def test_disabling_ends_every_session_at_once(client, register, login, admin, engine):
    pair = register()
    phone = login(User_Agent="phone")
    disabled = client.post(f"/api/admin/users/{pair['user']['id']}/disable", headers=admin)
    assert disabled.status_code == 200
    assert disabled.get_json()["disabled"] is True
    assert disabled.get_json()["active_sessions"] == 0
    assert disabled.headers["Cache-Control"] == "no-store"

    # A live access token is refused on its very next request, not when it expires.
    for device in (pair, phone):
        me = client.get("/api/auth/me", headers=bearer(device["access_token"]))
        assert me.status_code == 401
        assert me.headers["WWW-Authenticate"].startswith("Bearer")
        refreshed = client.post(
            "/api/auth/refresh", json={"refresh_token": device["refresh_token"]}
        )
        assert refreshed.status_code == 403
        assert refreshed.get_json()["code"] == "account_disabled"
    right = client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert right.status_code == 403
    assert right.get_json()["code"] == "account_disabled"
    wrong = client.post("/api/auth/login", json={"email": EMAIL, "password": "not the password"})
    assert wrong.status_code == 401  # the password is checked first: no oracle for strangers
    forgot = client.post("/api/auth/forgot-password", json={"email": EMAIL})
    assert forgot.status_code == 202

    again = client.post(f"/api/admin/users/{pair['user']['id']}/disable", headers=admin)
    assert again.status_code == 200  # idempotent, recorded once
    [(user_id, details)] = events(engine, "account_disabled")
    assert str(user_id) == pair["user"]["id"]
    assert details["by_client"].startswith("svc_") and details["revoked_sessions"] == 2

    enabled = client.post(f"/api/admin/users/{pair['user']['id']}/enable", headers=admin)
    assert enabled.get_json()["disabled"] is False
    assert login()["user"]["id"] == pair["user"]["id"]
    [(_, details)] = events(engine, "account_enabled")
    assert set(details) == {"by_client"}


def test_listing_searching_and_showing_accounts(client, register, admin):
    for name in ("alice", "bob", "carol", "alicia"):
        register(f"{name}@example.com")
    page = client.get("/api/admin/users?per_page=2&page=2", headers=admin).get_json()
    assert page["total"] == 4 and page["page"] == 2 and page["per_page"] == 2
    assert [a["email"] for a in page["items"]] == ["carol@example.com", "alicia@example.com"]
    found = client.get("/api/admin/users?email=ALI", headers=admin).get_json()
    assert sorted(a["email"] for a in found["items"]) == ["alice@example.com", "alicia@example.com"]
    assert client.get("/api/admin/users?email=%25", headers=admin).get_json()["total"] == 0
    account = found["items"][0]
    assert "password_hash" not in account
    shown = client.get(f"/api/admin/users/{account['id']}", headers=admin).get_json()
    assert shown == account
    assert shown["active_sessions"] == 1 and shown["email_verified"] is False
    for missing in (uuid.uuid4(), "not-a-uuid"):
        response = client.get(f"/api/admin/users/{missing}", headers=admin)
        assert response.status_code == 404
        assert response.get_json()["code"] == "not_found"
    for query in ("per_page=0", "per_page=101", "page=0", "page=x"):
        assert client.get(f"/api/admin/users?{query}", headers=admin).status_code == 422


def test_logout_delete_and_unlock_are_recorded_with_the_client(
    make_app, client, register, admin, engine
):
    pair = register()
    uid = pair["user"]["id"]
    logout = client.post(f"/api/admin/users/{uid}/logout", headers=admin)
    assert logout.get_json() == {"revoked_sessions": 1}
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    assert client.post(f"/api/admin/users/{uid}/unlock", headers=admin).status_code == 204
    assert client.delete(f"/api/admin/users/{uid}", headers=admin).status_code == 204
    assert client.delete(f"/api/admin/users/{uid}", headers=admin).status_code == 404
    assert client.get(f"/api/admin/users/{uid}", headers=admin).status_code == 404
    for event_type in ("sessions_revoked_by_admin", "login_unlocked", "account_deleted"):
        [(user_id, details)] = events(engine, event_type)
        assert user_id is None  # the account is gone; its events are nobody's now
        assert details["by_client"].startswith("svc_")


def test_unlock_ends_the_login_throttle_delay(make_app):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_THROTTLE_FREE_ATTEMPTS=2)
    client = app.test_client()
    pair = client.post("/api/auth/register", json={"email": EMAIL, "password": PASSWORD})
    uid = pair.get_json()["user"]["id"]
    wrong = {"email": EMAIL, "password": "not the password"}
    statuses = [client.post("/api/auth/login", json=wrong).status_code for _ in range(4)]
    assert statuses[-1] == 429
    right = {"email": EMAIL, "password": PASSWORD}
    assert client.post("/api/auth/login", json=right).status_code == 429
    admin = basic(make_client(app, "admin"))
    assert client.post(f"/api/admin/users/{uid}/unlock", headers=admin).status_code == 204
    assert client.post("/api/auth/login", json=right).status_code == 200


def cli(app, *args, input=None):
    result = app.test_cli_runner().invoke(args=list(args), input=input)
    return result


def test_users_cli(app, client, register, engine):
    pair = register()
    register("bob@example.com")
    created = cli(app, "users", "create", "--email", "carol@example.com", "--password", PASSWORD)
    assert created.exit_code == 0, created.output
    legacy = cli(app, "create-user", "--email", "dave@example.com", "--password", PASSWORD)
    assert legacy.exit_code == 0, legacy.output

    listed = json.loads(cli(app, "users", "list", "--email", "example", "--json").output)
    assert listed["total"] == 4
    plain = cli(app, "users", "list", "--email", "bob")
    assert "bob@example.com" in plain.output and "alice" not in plain.output
    shown = json.loads(cli(app, "users", "show", "ALICE@example.com", "--json").output)
    assert shown["id"] == pair["user"]["id"] and shown["active_sessions"] == 1
    assert cli(app, "users", "show", "nobody@example.com").exit_code != 0

    disabled = json.loads(cli(app, "users", "disable", EMAIL, "--json").output)
    assert disabled["disabled"] is True
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    assert json.loads(cli(app, "users", "enable", EMAIL, "--json").output)["disabled"] is False
    assert json.loads(cli(app, "users", "logout", EMAIL, "--json").output) == {
        "revoked_sessions": 0
    }
    assert cli(app, "users", "unlock", EMAIL).exit_code == 0
    assert cli(app, "users", "delete", EMAIL, input="n\n").exit_code != 0  # asks first
    assert cli(app, "users", "delete", EMAIL, "--yes").exit_code == 0
    assert cli(app, "users", "show", EMAIL).exit_code != 0
    [(_, details)] = events(engine, "account_disabled")
    assert details["by"] == "cli"


def test_openapi_documents_the_new_operations_and_their_errors(client):
    spec = client.get("/api/openapi.json").get_json()
    expected = {
        ("/api/auth/verify-email", "post"): {"200", "400", "422"},
        ("/api/auth/resend-verification", "post"): {"202", "422", "429"},
        ("/api/auth/change-email", "post"): {"202", "401", "422"},
        ("/api/auth/confirm-email-change", "post"): {"200", "400", "409"},
        ("/api/auth/me", "delete"): {"204", "401", "422"},
        ("/api/auth/me/export", "get"): {"200", "401"},
        ("/api/auth/register", "post"): {"201", "202", "409"},
        ("/api/auth/login", "post"): {"200", "401", "403"},
        ("/api/admin/users", "get"): {"200", "401", "403", "422"},
        ("/api/admin/users/{user_id}", "get"): {"200", "401", "403", "404"},
        ("/api/admin/users/{user_id}", "delete"): {"204", "401", "403", "404"},
        ("/api/admin/users/{user_id}/disable", "post"): {"200", "401", "403", "404"},
        ("/api/admin/users/{user_id}/enable", "post"): {"200", "401", "403", "404"},
        ("/api/admin/users/{user_id}/logout", "post"): {"200", "401", "403", "404"},
        ("/api/admin/users/{user_id}/unlock", "post"): {"204", "401", "403", "404"},
    }
    for (path, method), statuses in expected.items():
        operation = spec["paths"][path][method]
        assert statuses <= set(operation["responses"]), (path, method)
        assert operation["summary"], (path, method)
    admin_op = spec["paths"]["/api/admin/users"]["get"]
    assert admin_op["security"] == [{"clientBasicAuth": []}]
    assert "email_verified" in spec["components"]["schemas"]["User"]["properties"]
