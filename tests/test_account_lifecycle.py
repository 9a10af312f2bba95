"""The owner's side of an account's life, end to end over a real SMTP server: security
notices (refresh-token reuse, password changed or reset, email changed, new device), deleting
the account, exporting its data."""

from __future__ import annotations

from mailtest import reset_token, sign_in, signup, text_body, wait_for_messages
from sqlalchemy import select

from authsvc import mail
from authsvc.models import AuthSession, SecurityEvent, User
from conftest import PASSWORD, bearer

EMAIL = "alice@example.com"
NEW_PASSWORD = "a whole new passphrase"
REUSE_SUBJECT = "A sign-in of yours was ended for your security"


def subjects(smtp, address=EMAIL):
    mail.wait_until_sent(15)
    return [m["Subject"] for m in wait_for_messages(smtp.inbox, 0) if m["To"] == address]


def message(smtp, subject):
    mail.wait_until_sent(15)
    [found] = [m for m in wait_for_messages(smtp.inbox, 0) if m["Subject"] == subject]
    return found


def refresh(client, token):
    return client.post("/api/auth/refresh", json={"refresh_token": token})


def reuse(client, clock, pair):
    assert refresh(client, pair["refresh_token"]).status_code == 200
    clock.advance(11)  # past REFRESH_REUSE_GRACE
    replayed = refresh(client, pair["refresh_token"])
    assert replayed.status_code == 401
    assert replayed.get_json()["code"] == "refresh_token_reused"


def test_refresh_token_reuse_is_mailed_to_the_owner(make_app, smtp, clock):
    client = make_app(**smtp.settings()).test_client()
    pair = signup(client, EMAIL, PASSWORD)
    reuse(client, clock, pair)
    notice = message(smtp, REUSE_SUBJECT)
    assert notice["To"] == EMAIL
    body = text_body(notice)
    assert "ended" in body and "Sign in again, and change your password" in body


def test_each_notice_can_be_switched_off(make_app, smtp, clock):
    client = make_app(
        **smtp.settings(), NOTIFY_REFRESH_TOKEN_REUSE=False, NOTIFY_PASSWORD_CHANGED=False
    ).test_client()
    pair = signup(client, EMAIL, PASSWORD)
    reuse(client, clock, pair)
    pair = sign_in(client, EMAIL, PASSWORD)
    changed = client.post(
        "/api/auth/change-password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert changed.status_code == 200
    assert subjects(smtp) == []  # (besides the verification link)


def test_password_change_and_reset_are_notified(make_app, smtp):
    client = make_app(**smtp.settings()).test_client()
    pair = signup(client, EMAIL, PASSWORD)
    changed = client.post(
        "/api/auth/change-password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert changed.status_code == 200
    assert "/forgot-password" in text_body(message(smtp, "Your password was changed"))

    client.post("/api/auth/forgot-password", json={"email": EMAIL})
    token = reset_token(message(smtp, "Reset your password"))
    reset = client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": PASSWORD + " again"}
    )
    assert reset.status_code == 200
    assert message(smtp, "Your password was reset")["To"] == EMAIL


def test_sign_in_from_a_new_device_is_notified_only_when_asked(make_app, smtp):
    quiet = make_app(**smtp.settings()).test_client()
    signup(quiet, EMAIL, PASSWORD)
    sign_in(quiet, EMAIL, PASSWORD, "laptop")
    assert "New sign-in to your account" not in subjects(smtp)

    told = make_app(**smtp.settings(), NOTIFY_NEW_DEVICE=True).test_client()
    sign_in(told, EMAIL, PASSWORD, "laptop")  # seen before
    sign_in(told, EMAIL, PASSWORD, "Phone <script>")
    notice = message(smtp, "New sign-in to your account")
    assert "Phone <script>" in text_body(notice)
    html = notice.get_body(preferencelist=("html",)).get_content()
    assert "Phone &lt;script&gt;" in html and "<script>" not in html


def test_deleting_my_account(make_app, smtp, engine):
    client = make_app(**smtp.settings()).test_client()
    pair = signup(client, EMAIL, PASSWORD)
    other = sign_in(client, EMAIL, PASSWORD, "phone")
    wrong = client.delete(
        "/api/auth/me", json={"password": "not my password"}, headers=bearer(pair["access_token"])
    )
    assert wrong.status_code == 401
    assert wrong.get_json()["code"] == "invalid_credentials"
    assert client.delete("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 422

    deleted = client.delete(
        "/api/auth/me",
        json={"password": PASSWORD},
        headers={**bearer(pair["access_token"]), "User-Agent": "deleting browser"},
    )
    assert deleted.status_code == 204
    for device in (pair, other):
        assert client.get("/api/auth/me", headers=bearer(device["access_token"])).status_code == 401
        assert refresh(client, device["refresh_token"]).status_code == 401
    with engine.connect() as conn:
        assert conn.scalar(select(User.id)) is None
        assert conn.scalar(select(AuthSession.id)) is None
        kept = conn.execute(
            select(
                SecurityEvent.type,
                SecurityEvent.user_id,
                SecurityEvent.ip_address,
                SecurityEvent.user_agent,
            )
        ).all()
    types = [row.type for row in kept]
    assert "login_succeeded" in types and "account_deleted" in types
    # Kept, but no longer anyone's: no account, no address, no browser.
    assert all(row.user_id is None for row in kept)
    assert all(row.ip_address is None and row.user_agent is None for row in kept), kept
    gone = client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert gone.status_code == 401
    # The address can be registered again, as a new account.
    assert signup(client, EMAIL, PASSWORD)["user"]["id"] != pair["user"]["id"]


def test_exporting_my_data(client, clock):
    pair = signup(client, EMAIL, PASSWORD)
    phone = sign_in(client, EMAIL, PASSWORD, "phone")
    client.post("/api/auth/logout", json={"refresh_token": phone["refresh_token"]})
    response = client.get("/api/auth/me/export", headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert set(data) == {"format", "exported_at", "profile", "sessions", "events"}
    assert data["profile"]["id"] == pair["user"]["id"]
    assert data["profile"]["email"] == EMAIL
    assert data["profile"]["email_verified"] is False
    assert "password_hash" not in data["profile"]
    assert len(data["sessions"]) == 2
    ended = [s for s in data["sessions"] if s["revoked_at"]]
    assert [s["user_agent"] for s in ended] == ["phone"]
    assert ended[0]["revoke_reason"] == "logout"
    types = [e["type"] for e in data["events"]]
    assert types.count("login_succeeded") == 2 and "logout" in types
    assert "refresh_token" not in response.get_data(as_text=True)
    unauthenticated = client.get("/api/auth/me/export")
    assert unauthenticated.status_code == 401
    # The export itself is on the record.
    events = client.get("/api/auth/events", headers=bearer(pair["access_token"])).get_json()
    assert events[0]["type"] == "data_exported"
