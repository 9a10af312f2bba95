"""Email verification and change, end to end over a real SMTP server: the link mailed on
registration, resending it, REQUIRE_VERIFIED_EMAIL (no enumeration by registration, no
login or refresh before verifying), moving an account to a new address, the templates."""

from __future__ import annotations

import re

import pytest
from mailtest import access_claims, html_body, text_body, wait_for_messages
from sqlalchemy import select

from authsvc import mail
from authsvc.models import SecurityEvent
from conftest import PASSWORD, bearer

EMAIL = "alice@example.com"
NEW_EMAIL = "alice@new.example"
VERIFY_SUBJECT = "Confirm your email address"


def link_token(message, path):
    """The token of the message's FRONTEND_URL link to `path`, checked against its copy."""
    text = text_body(message)
    match = re.search(rf"http://localhost:3000{path}\?token=([A-Za-z0-9_-]+)", text)
    assert match, text
    assert f"\n{match.group(1)}\n" in text
    return match.group(1)


def inbox_of(smtp, address, subject=None):
    messages = wait_for_messages(smtp.inbox, 0, verification=True)
    return [
        m for m in messages if m["To"] == address and (subject is None or m["Subject"] == subject)
    ]


def wait_for(smtp, address, subject, count=1):
    mail.wait_until_sent(15)
    found = inbox_of(smtp, address, subject)
    assert len(found) == count, [(m["To"], m["Subject"]) for m in smtp.inbox.messages]
    return found


def register(client, email=EMAIL, password=PASSWORD):
    return client.post("/api/auth/register", json={"email": email, "password": password})


def login(client, email=EMAIL, password=PASSWORD):
    return client.post("/api/auth/login", json={"email": email, "password": password})


def events(engine, event_type):
    with engine.connect() as conn:
        return conn.execute(
            select(SecurityEvent.user_id).where(SecurityEvent.type == event_type)
        ).all()


def test_registration_mails_a_link_that_verifies_the_address(make_app, smtp, engine):
    client = make_app(**smtp.settings()).test_client()
    pair = register(client).get_json()
    assert pair["user"]["email_verified"] is False
    assert access_claims(pair["access_token"])["email_verified"] is False
    [message] = wait_for(smtp, EMAIL, VERIFY_SUBJECT)
    token = link_token(message, "/verify-email")
    assert f'href="http://localhost:3000/verify-email?token={token}"' in html_body(message)

    verified = client.post("/api/auth/verify-email", json={"token": token})
    assert verified.status_code == 200, verified.get_json()
    assert set(verified.get_json()) == {"message"}
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"])).get_json()
    assert me["email_verified"] is True
    refreshed = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert access_claims(refreshed.get_json()["access_token"])["email_verified"] is True
    assert refreshed.get_json()["user"]["email_verified"] is True

    again = client.post("/api/auth/verify-email", json={"token": token})
    assert again.status_code == 400
    assert again.get_json()["code"] == "invalid_email_token"
    assert again.headers["Content-Type"] == "application/problem+json"
    [(user_id,)] = events(engine, "email_verified")
    assert str(user_id) == pair["user"]["id"]


def test_bad_verification_tokens_are_refused_not_crashed(client):
    for body in ({"token": "nope"}, {"token": "x" * 512}):
        response = client.post("/api/auth/verify-email", json=body)
        assert response.status_code == 400
        assert response.get_json()["code"] == "invalid_email_token"
    for body in ({}, {"token": ""}, {"token": 5}, {"token": "a", "extra": 1}):
        response = client.post("/api/auth/verify-email", json=body)
        assert response.status_code == 422, body


def test_resend_gives_one_answer_and_mails_only_unverified_accounts(make_app, smtp):
    client = make_app(**smtp.settings()).test_client()
    register(client)
    register(client, "bob@example.com")
    [bob_first] = wait_for(smtp, "bob@example.com", VERIFY_SUBJECT)
    client.post("/api/auth/verify-email", json={"token": link_token(bob_first, "/verify-email")})
    [first] = wait_for(smtp, EMAIL, VERIFY_SUBJECT)

    answers = [
        client.post("/api/auth/resend-verification", json={"email": address})
        for address in (EMAIL, "bob@example.com", "nobody@example.com", " ALICE@example.com")
    ]
    for response in answers:
        assert response.status_code == 202
        assert response.get_data() == answers[0].get_data()
    # Alice (unverified) got two more links, Bob (verified) and nobody none.
    first_again, second, third = wait_for(smtp, EMAIL, VERIFY_SUBJECT, count=3)
    assert first_again["Message-ID"] == first["Message-ID"]
    assert len(inbox_of(smtp, "bob@example.com")) == 1
    assert inbox_of(smtp, "nobody@example.com") == []

    # Each new link voids the older ones.
    for old in (first, second):
        response = client.post(
            "/api/auth/verify-email", json={"token": link_token(old, "/verify-email")}
        )
        assert response.status_code == 400
    newest = client.post(
        "/api/auth/verify-email", json={"token": link_token(third, "/verify-email")}
    )
    assert newest.status_code == 200
    invalid = client.post("/api/auth/resend-verification", json={"email": "not an address"})
    assert invalid.status_code == 422


def test_resend_is_rate_limited(make_app):
    client = make_app(
        RATELIMIT_ENABLED=True, RATELIMIT_RESEND_VERIFICATION_PER_ACCOUNT="2/hour"
    ).test_client()
    statuses = [
        client.post("/api/auth/resend-verification", json={"email": EMAIL}).status_code
        for _ in range(3)
    ]
    assert statuses == [202, 202, 429]
    limited = client.post("/api/auth/resend-verification", json={"email": EMAIL})
    assert limited.get_json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


def same_headers(response):
    return sorted(
        (name, value)
        for name, value in response.headers.items()
        if name.lower() not in {"x-request-id", "date"}
    )


def test_required_verification_registers_without_telling_who_exists(make_app, smtp):
    client = make_app(**smtp.settings(), REQUIRE_VERIFIED_EMAIL=True).test_client()
    new = register(client)
    taken = register(client, " Alice@Example.com ", "another long passphrase")
    assert new.status_code == taken.status_code == 202
    assert new.get_data() == taken.get_data()
    assert same_headers(new) == same_headers(taken)
    assert set(new.get_json()) == {"message"}
    assert "access_token" not in new.get_json()

    [link] = wait_for(smtp, EMAIL, VERIFY_SUBJECT)
    [notice] = wait_for(smtp, EMAIL, "Someone tried to use your email address")
    assert "sign up" in text_body(notice)
    assert "token=" not in text_body(notice)

    # No session before the address is verified; the wrong password is still just wrong.
    refused = login(client)
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "email_not_verified"
    assert login(client, password="another long passphrase").status_code == 401
    verify = client.post(
        "/api/auth/verify-email", json={"token": link_token(link, "/verify-email")}
    )
    assert verify.status_code == 200
    pair = login(client)
    assert pair.status_code == 200
    assert pair.get_json()["user"]["email_verified"] is True


def test_required_verification_stops_refreshes_of_unverified_sessions(make_app, smtp):
    lenient = make_app(**smtp.settings()).test_client()
    pair = register(lenient).get_json()  # a session from before the setting was turned on
    [link] = wait_for(smtp, EMAIL, VERIFY_SUBJECT)
    strict = make_app(**smtp.settings(), REQUIRE_VERIFIED_EMAIL=True).test_client()
    refused = strict.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "email_not_verified"
    strict.post("/api/auth/verify-email", json={"token": link_token(link, "/verify-email")})
    # The refused refresh spent nothing: the same token works once the address is verified.
    ok = strict.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert ok.status_code == 200, ok.get_json()


def change_email(client, pair, new_email=NEW_EMAIL, password=PASSWORD):
    return client.post(
        "/api/auth/change-email",
        json={"password": password, "new_email": new_email},
        headers=bearer(pair["access_token"]),
    )


def test_change_email_applies_when_the_new_address_confirms(make_app, smtp, engine):
    client = make_app(**smtp.settings()).test_client()
    pair = register(client).get_json()
    wrong = change_email(client, pair, password="not the password at all")
    assert wrong.status_code == 401
    assert wrong.get_json()["code"] == "invalid_credentials"
    same = change_email(client, pair, new_email=EMAIL)
    assert same.status_code == 422
    assert change_email(client, pair, new_email="not an address").status_code == 422
    assert change_email(client, {"access_token": "x"}).status_code == 401

    accepted = change_email(client, pair)
    assert accepted.status_code == 202, accepted.get_json()
    [confirm] = wait_for(smtp, NEW_EMAIL, "Confirm your new email address")
    [requested] = wait_for(smtp, EMAIL, "A change of your email address was requested")
    assert NEW_EMAIL in text_body(requested)
    token = link_token(confirm, "/confirm-email-change")
    # Nothing changes before the confirmation.
    assert login(client).status_code == 200
    assert login(client, NEW_EMAIL).status_code == 401

    confirmed = client.post("/api/auth/confirm-email-change", json={"token": token})
    assert confirmed.status_code == 200, confirmed.get_json()
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"])).get_json()
    assert me["email"] == NEW_EMAIL
    assert me["email_verified"] is True
    assert login(client).status_code == 401
    assert login(client, NEW_EMAIL).status_code == 200
    [changed] = wait_for(smtp, EMAIL, "Your email address was changed")
    assert NEW_EMAIL in text_body(changed)
    again = client.post("/api/auth/confirm-email-change", json={"token": token})
    assert again.status_code == 400
    # A verification token is no change token, and the other way round.
    assert client.post("/api/auth/verify-email", json={"token": token}).status_code == 400
    assert len(events(engine, "email_changed")) == 1
    assert len(events(engine, "email_change_requested")) == 1


def test_change_to_a_taken_address_answers_alike_and_tells_that_address(make_app, smtp):
    client = make_app(**smtp.settings()).test_client()
    pair = register(client).get_json()
    register(client, NEW_EMAIL)
    free = change_email(client, pair, new_email="free@example.com")
    taken = change_email(client, pair)
    assert free.status_code == taken.status_code == 202
    assert free.get_data() == taken.get_data()
    [notice] = wait_for(smtp, NEW_EMAIL, "Someone tried to use your email address")
    assert "token=" not in text_body(notice)
    assert inbox_of(smtp, NEW_EMAIL, "Confirm your new email address") == []


def test_templates_are_overridable_and_the_html_part_escaped(make_app, smtp, tmp_path):
    (tmp_path / "verify_email.subject.txt").write_text("Welcome to {{ product_name }}\n")
    client = make_app(
        **smtp.settings(), MAIL_TEMPLATES_DIR=str(tmp_path), PRODUCT_NAME="Acme <Tools> & Co"
    ).test_client()
    register(client)
    [message] = wait_for(smtp, EMAIL, "Welcome to Acme <Tools> & Co")
    assert "Acme <Tools> & Co account" in text_body(message)  # text: as written
    assert "Acme &lt;Tools&gt; &amp; Co account" in html_body(message)  # HTML: escaped
    assert link_token(message, "/verify-email")


def test_mail_settings_are_validated(make_app, tmp_path):
    from authsvc.config import ConfigError

    with pytest.raises(ConfigError, match="MAIL_TEMPLATES_DIR"):
        make_app(MAIL_TEMPLATES_DIR=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="EMAIL_VERIFICATION_TTL"):
        make_app(EMAIL_VERIFICATION_TTL=5)
