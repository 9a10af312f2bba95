"""Password reset: the emailed token, end to end over real SMTP and through the outbox; single
use (also under concurrency), expiry, voiding by a newer request; every session ended; the
same answer for known and unknown emails; nothing secret in the logs."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from mailtest import (
    capture_logs,
    html_body,
    outbox_messages,
    reset_token,
    sign_in,
    signup,
    text_body,
    wait_for_messages,
)
from sqlalchemy import func, select

from authsvc.models import PasswordResetToken, SecurityEvent
from authsvc.security.tokens import hash_token
from conftest import PASSWORD, bearer

EMAIL = "alice@example.com"
NEW_PASSWORD = "a whole new passphrase"
RESET = "/api/auth/reset-password"
FORGOT = "/api/auth/forgot-password"


@pytest.fixture
def outbox(tmp_path):
    return tmp_path / "outbox"


@pytest.fixture
def outbox_client(make_app, outbox):
    return make_app(MAIL_OUTBOX_DIR=str(outbox)).test_client()


@pytest.fixture
def logs():
    yield from capture_logs()


def request_reset(client, email=EMAIL, **headers):
    response = client.post(FORGOT, json={"email": email}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return response


def same_headers(response):
    """Headers that must not differ between two answers (per-request ids and dates may)."""
    return sorted(
        (name, value)
        for name, value in response.headers.items()
        if name.lower() not in {"x-request-id", "date"}
    )


def reset(client, token, new_password=NEW_PASSWORD):
    return client.post(RESET, json={"token": token, "new_password": new_password})


def refresh(client, refresh_token):
    return client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


def events(engine, event_type):
    with engine.connect() as conn:
        return conn.execute(
            select(SecurityEvent.user_id, SecurityEvent.details).where(
                SecurityEvent.type == event_type
            )
        ).all()


def live_reset_tokens(engine):
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count())
            .select_from(PasswordResetToken)
            .where(PasswordResetToken.used_at.is_(None))
        )


def assert_reset_took_over(client, devices, pair):
    """After a reset: old password out, new one in, every earlier session dead."""
    for device in devices:
        refreshed = client.post(
            "/api/auth/refresh", json={"refresh_token": device["refresh_token"]}
        )
        assert refreshed.status_code == 401
        assert refreshed.get_json()["code"] == "invalid_token"
        assert client.get("/api/auth/me", headers=bearer(device["access_token"])).status_code == 401
    old = client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert old.status_code == 401
    assert old.get_json()["code"] == "invalid_credentials"
    sign_in(client, EMAIL, NEW_PASSWORD)
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["email"] == EMAIL
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_reset_end_to_end_over_smtp(make_app, smtp, engine):
    client = make_app(**smtp.settings()).test_client()
    first = signup(client, EMAIL, PASSWORD)
    second = sign_in(client, EMAIL, PASSWORD, "phone")

    accepted = request_reset(client)
    assert accepted.get_json() == {"message": accepted.get_json()["message"]}
    [message] = wait_for_messages(smtp.inbox)
    token = reset_token(message)
    assert smtp.inbox.envelopes[0].rcpt_tos == [EMAIL]

    response = reset(client, token)
    assert response.status_code == 200, response.get_json()
    pair = response.get_json()
    assert set(pair) == set(first)
    assert pair["token_type"] == "bearer"
    # The mail reached the address: the reset verified it.
    assert first["user"]["email_verified"] is False
    assert pair["user"] == {**first["user"], "email_verified": True}
    assert response.headers["Cache-Control"] == "no-store"
    assert_reset_took_over(client, [first, second], pair)

    [(user_id, _)] = events(engine, "password_reset_requested")
    assert str(user_id) == first["user"]["id"]
    [(_, details)] = events(engine, "password_reset")
    assert details == {"revoked_sessions": 2}


def test_reset_end_to_end_through_the_outbox(outbox_client, outbox):
    client = outbox_client
    first = signup(client, EMAIL, PASSWORD)
    request_reset(client)
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    assert f"http://localhost:3000/reset-password?token={token}" in text_body(message)

    response = reset(client, token)
    assert response.status_code == 200, response.get_json()
    assert_reset_took_over(client, [first], response.get_json())


@pytest.mark.slow
def test_reset_under_gunicorn_mails_from_the_worker(live_server, smtp, client):
    """The background sender runs in a real gunicorn worker, not only under the test client."""
    signup(client, EMAIL, PASSWORD)
    server = live_server(workers=1, threads=2, **smtp.settings())

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            server.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    assert post(FORGOT, {"email": EMAIL})[0] == 202
    [message] = wait_for_messages(smtp.inbox)
    status, pair = post(RESET, {"token": reset_token(message), "new_password": NEW_PASSWORD})
    assert status == 200, pair
    assert post("/api/auth/login", {"email": EMAIL, "password": NEW_PASSWORD})[0] == 200


def test_known_and_unknown_emails_get_the_same_answer(outbox_client, outbox, engine):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    known = request_reset(client, EMAIL)
    unknown = request_reset(client, "nobody@example.com")
    differently_spelt = request_reset(client, "  ALICE@Example.com ")
    for response in (unknown, differently_spelt):
        assert response.status_code == known.status_code == 202
        assert response.get_data() == known.get_data()
        assert same_headers(response) == same_headers(known)
    assert set(known.get_json()) == {"message"}
    assert [m["To"] for m in outbox_messages(outbox)] == [EMAIL, EMAIL]
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(PasswordResetToken)) == 2
    requested = events(engine, "password_reset_requested")
    assert sorted(d == {"reason": "unknown_email"} for _, d in requested) == [False, False, True]
    assert sum(user_id is None for user_id, _ in requested) == 1


def test_malformed_email_is_a_validation_error(client):
    for body in ({"email": "not-an-email"}, {"email": ""}, {}, {"email": "a@b.c", "x": 1}):
        response = client.post(FORGOT, json=body)
        assert response.status_code == 422, body
        assert response.get_json()["code"] == "validation_error"
    assert client.post(FORGOT, json={"email": "x" * 400 + "@example.com"}).status_code == 422


def test_a_new_request_voids_the_older_token(outbox_client, outbox, engine):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    request_reset(client)
    first, second = (reset_token(m) for m in outbox_messages(outbox))
    assert first != second
    assert live_reset_tokens(engine) == 1
    stale = reset(client, first)
    assert stale.status_code == 400
    assert stale.get_json()["code"] == "invalid_reset_token"
    assert reset(client, second).status_code == 200


def test_a_token_works_once(outbox_client, outbox):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    assert reset(client, token).status_code == 200
    again = reset(client, token, "yet another passphrase")
    assert again.status_code == 400
    assert again.get_json()["code"] == "invalid_reset_token"
    assert again.content_type == "application/problem+json"
    sign_in(client, EMAIL, NEW_PASSWORD)


def test_an_expired_token_is_refused(make_app, outbox, clock):
    client = make_app(MAIL_OUTBOX_DIR=str(outbox), PASSWORD_RESET_TTL=120).test_client()
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    [message] = outbox_messages(outbox)
    assert "within 2 minutes" in text_body(message)
    clock.advance(121)
    expired = reset(client, reset_token(message))
    assert expired.status_code == 400
    assert expired.get_json()["code"] == "invalid_reset_token"
    sign_in(client, EMAIL, PASSWORD)


def test_the_default_lifetime_is_thirty_minutes(outbox_client, outbox, clock):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    request_reset(client, "bob@example.com")  # no account: nothing to expire
    [message] = outbox_messages(outbox)
    assert "within 30 minutes" in text_body(message)
    clock.advance(29 * 60)
    assert (reset(client, reset_token(message))).status_code == 200
    request_reset(client)
    message = outbox_messages(outbox)[-1]
    clock.advance(30 * 60 + 1)
    late = reset(client, reset_token(message), PASSWORD)
    assert late.status_code == 400


def test_unknown_and_malformed_tokens(client, user):
    for token in ("x", "A" * 43, "A" * 129, "../../etc/passwd", "é" * 20):
        response = reset(client, token)
        assert response.status_code == 400, token
        assert response.get_json()["code"] == "invalid_reset_token"
    for body in (
        {"token": "", "new_password": NEW_PASSWORD},
        {"token": "A" * 600, "new_password": NEW_PASSWORD},
        {"token": "abc"},
        {"token": "abc\x00", "new_password": NEW_PASSWORD},
        {"token": 42, "new_password": NEW_PASSWORD},
    ):
        response = client.post(RESET, json=body)
        assert response.status_code == 422, body
        assert response.get_json()["code"] == "validation_error"


def test_a_weak_password_leaves_the_token_usable(outbox_client, outbox):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    for weak, reason in (
        ("short", "at least 12"),
        ("password1234", "common"),
        ("alice alice!!", "email"),
    ):
        response = reset(client, token, weak)
        assert response.status_code == 422
        problem = response.get_json()
        assert problem["code"] == "weak_password"
        assert reason in problem["detail"]
        assert "new_password" in problem["errors"]
    assert reset(client, token).status_code == 200


def test_one_token_spent_by_concurrent_requests_works_once(outbox_client, outbox, engine):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    app = client.application
    attempts = 8
    barrier = threading.Barrier(attempts)
    results: list[tuple[int, str, dict]] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        password = f"concurrent passphrase {i}"
        barrier.wait()
        response = app.test_client().post(RESET, json={"token": token, "new_password": password})
        with lock:
            results.append((response.status_code, password, response.get_json()))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [400] * (attempts - 1), results
    [(_, winner, pair)] = [r for r in results if r[0] == 200]
    assert all(
        body["code"] == "invalid_reset_token" for status, _, body in results if status == 400
    )
    sign_in(client, EMAIL, winner)
    assert refresh(client, pair["refresh_token"]).status_code == 200
    assert len(events(engine, "password_reset")) == 1


def test_concurrent_requests_leave_one_live_token(outbox_client, outbox, engine):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    app = client.application
    attempts = 6
    barrier = threading.Barrier(attempts)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(app.test_client().post(FORGOT, json={"email": EMAIL}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [202] * attempts
    assert live_reset_tokens(engine) == 1
    tokens = [reset_token(m) for m in outbox_messages(outbox)]
    assert len(tokens) == attempts
    outcomes = [reset(client, t).status_code for t in tokens]
    assert sorted(outcomes) == [200] + [400] * (attempts - 1)


def test_the_link_comes_from_frontend_url_not_the_request(make_app, outbox):
    client = make_app(
        MAIL_OUTBOX_DIR=str(outbox), FRONTEND_URL="https://app.example.org/portal/"
    ).test_client()
    signup(client, EMAIL, PASSWORD)
    request_reset(
        client,
        Host="evil.example",
        **{"X-Forwarded-Host": "evil.example", "Origin": "https://evil.example"},
    )
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    link = f"https://app.example.org/portal/reset-password?token={token}"
    assert link in text_body(message)
    assert f'href="{link}"' in html_body(message)
    assert "evil" not in text_body(message) + html_body(message)


def test_only_the_hash_of_the_token_is_stored(outbox_client, outbox, engine):
    client = outbox_client
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    with engine.connect() as conn:
        row = conn.execute(select(PasswordResetToken)).one()
    assert row.token_hash == hash_token(token)
    assert token not in repr(tuple(row))
    assert (row.expires_at - row.created_at).total_seconds() == 1800


def test_no_token_or_password_in_the_logs(make_app, outbox, logs):
    client = make_app(MAIL_OUTBOX_DIR=str(outbox), LOG_LEVEL="DEBUG").test_client()
    signup(client, EMAIL, PASSWORD)
    request_reset(client)
    request_reset(client, "nobody@example.com")
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    weak = reset(client, token, "short")
    assert weak.status_code == 422
    assert reset(client, token).status_code == 200
    assert reset(client, token).status_code == 400

    text = logs.text()
    assert '"event":"password_reset_requested"' in text
    assert '"event":"password_reset"' in text
    assert "mail written to outbox" in text
    for secret in (token, hash_token(token), PASSWORD, NEW_PASSWORD):
        assert secret not in text
    assert any(token in path.read_text() for path in outbox.glob("*.eml"))  # where it belongs
