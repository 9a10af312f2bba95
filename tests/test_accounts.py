"""Register, login and /me: the TokenPair contract, email rules, password policy, rehashing."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text

from authsvc.models import User
from conftest import PASSWORD, bearer

TOKEN_PAIR_FIELDS = {
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "refresh_expires_in",
    "user",
}


def test_register_returns_token_pair_field_for_field(client):
    response = client.post(
        "/api/auth/register",
        json={"email": "alice@example.com", "password": PASSWORD, "name": "Alice"},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == TOKEN_PAIR_FIELDS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1800
    assert body["refresh_expires_in"] == 604800
    assert set(body["user"]) == {"id", "email", "name", "created_at", "email_verified"}
    assert body["user"]["email"] == "alice@example.com"
    assert body["user"]["name"] == "Alice"
    uuid.UUID(body["user"]["id"])
    assert response.headers["Cache-Control"] == "no-store"


def test_register_without_name(client):
    response = client.post(
        "/api/auth/register", json={"email": "bob@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    assert response.get_json()["user"]["name"] is None


def test_email_is_trimmed_lowercased_and_unique(client, register):
    body = register(email="  Alice@Example.COM ")
    assert body["user"]["email"] == "alice@example.com"
    again = client.post(
        "/api/auth/register", json={"email": "ALICE@example.com", "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.get_json()["code"] == "email_taken"
    assert again.content_type == "application/problem+json"


def test_invalid_email_is_a_validation_error(client):
    for email in ["not-an-email", "a@b", "alice@@example.com", "alice@exam ple.com"]:
        response = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 422, email
        problem = response.get_json()
        assert problem["code"] == "validation_error"
        assert "email" in problem["errors"]


def test_login_and_me(client, user, login):
    pair = login(email="ALICE@example.com ")
    assert set(pair) == TOKEN_PAIR_FIELDS
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.get_json() == user["user"]


def test_login_failures_look_the_same(client, user):
    wrong = client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": "wrong password!"}
    )
    unknown = client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    malformed = client.post("/api/auth/login", json={"email": "nobody", "password": PASSWORD})
    for response in (wrong, unknown, malformed):
        assert response.status_code == 401
        assert response.get_json() == wrong.get_json()
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.get_json()["code"] == "invalid_credentials"


def test_me_requires_a_token(client):
    response = client.get("/api/auth/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content_type == "application/problem+json"
    bad = client.get("/api/auth/me", headers={"Authorization": "Basic abc"})
    assert bad.status_code == 401
    assert bad.get_json()["code"] == "invalid_token"


def test_user_output_never_contains_secrets(client, user, engine):
    with engine.connect() as conn:
        stored_hash = conn.execute(text("SELECT password_hash FROM users")).scalar()
    assert stored_hash.startswith("$argon2id$")
    response = client.get("/api/auth/me", headers=bearer(user["access_token"]))
    assert stored_hash not in response.get_data(as_text=True)
    assert "password" not in response.get_data(as_text=True)


def _policy_error(client, password, email="carol@example.com"):
    response = client.post("/api/auth/register", json={"email": email, "password": password})
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert problem["code"] == "weak_password"
    return problem["detail"]


def test_password_policy(client):
    assert "at least 12" in _policy_error(client, "short pw 1")
    assert "common" in _policy_error(client, "password1234")
    assert "common" in _policy_error(client, "Qwertyuiop123")
    assert "email" in _policy_error(client, "my name is carol, ok?")
    assert "at most 256" in _policy_error(client, "x" * 257 + "unique")


def test_long_passwords_are_accepted_and_never_truncated(client, login):
    password = "Ω-long passphrase " * 14  # 252 characters, non-ASCII included
    password = password + "1234"
    assert len(password) == 256
    response = client.post(
        "/api/auth/register", json={"email": "dave@example.com", "password": password}
    )
    assert response.status_code == 201
    login(email="dave@example.com", password=password)
    truncated = client.post(
        "/api/auth/login", json={"email": "dave@example.com", "password": password[:-1]}
    )
    assert truncated.status_code == 401


def test_no_composition_rules(client):
    response = client.post(
        "/api/auth/register",
        json={"email": "erin@example.com", "password": "all lowercase words here"},
    )
    assert response.status_code == 201


def test_min_length_is_configurable(make_app):
    client = make_app(PASSWORD_MIN_LENGTH=20).test_client()
    response = client.post(
        "/api/auth/register", json={"email": "frank@example.com", "password": "sixteen chars ok"}
    )
    assert response.status_code == 422
    assert response.get_json()["code"] == "weak_password"


def test_hash_is_upgraded_on_login_when_parameters_change(make_app, engine):
    old = make_app(ARGON2_MEMORY_COST=64, ARGON2_TIME_COST=1).test_client()
    assert (
        old.post(
            "/api/auth/register", json={"email": "gina@example.com", "password": PASSWORD}
        ).status_code
        == 201
    )
    with engine.connect() as conn:
        before = conn.execute(select(User.password_hash)).scalar_one()
    assert "m=64,t=1" in before

    new = make_app(ARGON2_MEMORY_COST=128, ARGON2_TIME_COST=2).test_client()
    response = new.post("/api/auth/login", json={"email": "gina@example.com", "password": PASSWORD})
    assert response.status_code == 200
    with engine.connect() as conn:
        after = conn.execute(select(User.password_hash)).scalar_one()
    assert "m=128,t=2" in after
    # The upgraded hash still verifies, under either configuration.
    assert (
        old.post(
            "/api/auth/login", json={"email": "gina@example.com", "password": PASSWORD}
        ).status_code
        == 200
    )


def test_create_user_command(app, login):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["create-user", "--email", "Ops@Example.com", "--name", "Ops", "--password", PASSWORD]
    )
    assert result.exit_code == 0, result.output
    assert "ops@example.com" in result.output
    assert PASSWORD not in result.output
    login(email="ops@example.com")
    weak = runner.invoke(args=["create-user", "--email", "w@example.com", "--password", "short"])
    assert weak.exit_code != 0
    assert "at least 12" in weak.output
