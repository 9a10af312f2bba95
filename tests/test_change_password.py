"""Password change: the current device keeps its session with a fresh refresh token, every
other session ends, a wrong current password or a weak new one changes nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from mailtest import access_claims, capture_logs, outbox_messages, reset_token, sign_in, signup
from sqlalchemy import select

from authsvc.models import AuthSession, SecurityEvent
from conftest import PASSWORD, bearer

EMAIL = "alice@example.com"
NEW_PASSWORD = "a whole new passphrase"
CHANGE = "/api/auth/change-password"


@pytest.fixture
def logs():
    yield from capture_logs()


def change(client, access_token, current=PASSWORD, new=NEW_PASSWORD):
    return client.post(
        CHANGE,
        json={"current_password": current, "new_password": new},
        headers=bearer(access_token),
    )


def refresh(client, refresh_token):
    return client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


def me(client, access_token):
    return client.get("/api/auth/me", headers=bearer(access_token))


def events(engine, event_type):
    with engine.connect() as conn:
        return conn.execute(
            select(SecurityEvent.session_id, SecurityEvent.details).where(
                SecurityEvent.type == event_type
            )
        ).all()


def test_change_keeps_this_device_and_ends_every_other_session(client, engine):
    laptop = signup(client, EMAIL, PASSWORD)
    phone = sign_in(client, EMAIL, PASSWORD, "phone")
    tablet = sign_in(client, EMAIL, PASSWORD, "tablet")

    response = change(client, laptop["access_token"])
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    pair = response.get_json()
    assert set(pair) == set(laptop)
    assert pair["user"] == laptop["user"]
    assert pair["refresh_token"] != laptop["refresh_token"]
    # The same session (device), with a new refresh-token chain.
    sid = access_claims(laptop["access_token"])["sid"]
    assert access_claims(pair["access_token"])["sid"] == sid

    for other in (phone, tablet):
        assert refresh(client, other["refresh_token"]).status_code == 401
        assert me(client, other["access_token"]).status_code == 401
    stale = refresh(client, laptop["refresh_token"])
    assert stale.status_code == 401
    assert stale.get_json()["code"] == "invalid_token"  # revoked, not "reused"
    assert me(client, pair["access_token"]).status_code == 200
    assert refresh(client, pair["refresh_token"]).status_code == 200

    old = client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert old.status_code == 401
    sign_in(client, EMAIL, NEW_PASSWORD)

    with engine.connect() as conn:
        live = conn.scalars(select(AuthSession.id).where(AuthSession.revoked_at.is_(None))).all()
    assert str(sid) in {str(s) for s in live}
    [(event_sid, details)] = events(engine, "password_changed")
    assert str(event_sid) == sid
    assert details == {"revoked_sessions": 2}


def test_wrong_current_password_changes_nothing(client, engine):
    laptop = signup(client, EMAIL, PASSWORD)
    phone = sign_in(client, EMAIL, PASSWORD, "phone")
    response = change(client, laptop["access_token"], current="not my password at all")
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_credentials"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content_type == "application/problem+json"

    assert refresh(client, phone["refresh_token"]).status_code == 200
    assert me(client, laptop["access_token"]).status_code == 200
    sign_in(client, EMAIL, PASSWORD)
    assert events(engine, "password_changed") == []
    [(_, details)] = events(engine, "login_failed")
    assert details == {"method": "change_password"}


def test_new_password_must_pass_the_policy(client, user):
    for weak, reason in (
        ("short", "at least 12"),
        ("qwertyuiop123", "common"),
        ("alice in wonderland", "email"),
        ("x" * 257 + "!", "at most 256"),
    ):
        response = change(client, user["access_token"], new=weak)
        assert response.status_code == 422, weak
        problem = response.get_json()
        assert problem["code"] == "weak_password"
        assert reason in problem["detail"]
        assert "new_password" in problem["errors"]
    sign_in(client, EMAIL, PASSWORD)


def test_change_needs_a_live_access_token(client, user):
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    missing = client.post(CHANGE, json=body)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.post(CHANGE, json=body, headers=bearer("not.a.jwt")).status_code == 401
    client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]})
    revoked = change(client, user["access_token"])
    assert revoked.status_code == 401
    assert revoked.get_json()["code"] == "invalid_token"
    sign_in(client, EMAIL, PASSWORD)


def test_malformed_bodies_are_validation_errors(client, user):
    for body in (
        {},
        {"current_password": PASSWORD},
        {"current_password": PASSWORD, "new_password": 12},
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "extra": 1},
        {"current_password": "x" * 2000, "new_password": NEW_PASSWORD},
    ):
        response = client.post(CHANGE, json=body, headers=bearer(user["access_token"]))
        assert response.status_code == 422, body
        assert response.get_json()["code"] == "validation_error"


def test_change_voids_outstanding_reset_links(make_app, tmp_path):
    outbox = tmp_path / "outbox"
    client = make_app(MAIL_OUTBOX_DIR=str(outbox)).test_client()
    pair = signup(client, EMAIL, PASSWORD)
    client.post("/api/auth/forgot-password", json={"email": EMAIL})
    [message] = outbox_messages(outbox)
    assert change(client, pair["access_token"]).status_code == 200
    late = client.post(
        "/api/auth/reset-password",
        json={"token": reset_token(message), "new_password": "someone else's passphrase"},
    )
    assert late.status_code == 400
    assert late.get_json()["code"] == "invalid_reset_token"
    sign_in(client, EMAIL, NEW_PASSWORD)


def test_concurrent_changes_with_the_same_current_password(client, user):
    """Both checked the same old password; the conditional update lets exactly one win."""
    app = client.application
    barrier = threading.Barrier(2)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def attempt(new: str) -> None:
        barrier.wait()
        response = change(app.test_client(), user["access_token"], new=new)
        with lock:
            results.append((response.status_code, new))

    threads = [
        threading.Thread(target=attempt, args=(p,))
        for p in ("first new passphrase", "second new passphrase")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 401], results
    [winner] = [new for status, new in results if status == 200]
    sign_in(client, EMAIL, winner)


def test_no_password_in_the_logs(make_app, logs):
    client = make_app(LOG_LEVEL="DEBUG").test_client()
    pair = signup(client, EMAIL, PASSWORD)
    assert change(client, pair["access_token"], current="a wrong guess here").status_code == 401
    changed = change(client, pair["access_token"])
    assert changed.status_code == 200
    text = logs.text()
    assert '"event":"password_changed"' in text
    for secret in (
        PASSWORD,
        NEW_PASSWORD,
        "a wrong guess here",
        changed.get_json()["refresh_token"],
    ):
        assert secret not in text


def test_a_refresh_racing_the_change_leaves_one_live_chain(client, user):
    """Whatever order a refresh of this device and the change commit in, only the change's
    new refresh token works afterwards (no second chain left alive in the kept session)."""
    app = client.application
    pair, current = user, PASSWORD
    for round_ in range(4):
        new = f"round {round_} passphrase"
        barrier = threading.Barrier(2)
        outcome: dict[str, Any] = {}

        def change_it(pair=pair, current=current, new=new, barrier=barrier, outcome=outcome):
            barrier.wait()
            outcome["change"] = change(app.test_client(), pair["access_token"], current, new)

        def refresh_it(pair=pair, barrier=barrier, outcome=outcome):
            barrier.wait()
            outcome["refresh"] = refresh(app.test_client(), pair["refresh_token"])

        threads = [threading.Thread(target=change_it), threading.Thread(target=refresh_it)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        changed = outcome["change"]
        assert changed.status_code == 200, changed.get_json()
        raced = outcome["refresh"]
        if raced.status_code == 200:  # the refresh won: its successor died with the change
            assert refresh(client, raced.get_json()["refresh_token"]).status_code == 401
        else:
            assert raced.status_code == 401
        pair, current = changed.get_json(), new
        assert me(client, pair["access_token"]).status_code == 200
    assert refresh(client, pair["refresh_token"]).status_code == 200
