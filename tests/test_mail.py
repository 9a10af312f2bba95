"""Mail delivery: the outbox and SMTP (plain, STARTTLS, implicit TLS, login) backends against
a real server on loopback, message shape (text + HTML, Date, Message-ID), failures that are
logged without secrets and never reach the caller, and the mail settings' validation."""

from __future__ import annotations

import stat
from email.utils import parseaddr, parsedate_to_datetime

import pytest
from mailtest import (
    SMTP_SECRET,
    SMTP_USER,
    Certificate,
    SmtpServer,
    capture_logs,
    html_body,
    outbox_messages,
    reset_token,
    text_body,
    wait_for_messages,
)

from authsvc import mail
from authsvc.config import ConfigError, load_settings
from conftest import PASSWORD, free_port

EMAIL = "alice@example.com"


@pytest.fixture
def logs():
    yield from capture_logs()


@pytest.fixture
def cert(tmp_path):
    return Certificate(tmp_path)


@pytest.fixture
def servers():
    """Start SMTP servers on loopback; each is stopped once queued mail has gone out."""
    started: list[SmtpServer] = []

    def start(tls=None, cert=None):
        server = SmtpServer(tls, cert)
        started.append(server)
        return server

    yield start
    mail.wait_until_sent(15)
    for server in started:
        server.stop()


def signup(client, email, password):
    """An account made by an operator (`flask create-user`): unlike registration, it mails
    nothing, so the reset message is the only one each test sees."""
    result = client.application.test_cli_runner().invoke(
        args=["create-user", "--email", email, "--password", password]
    )
    assert result.exit_code == 0, result.output


def forgot(client, email=EMAIL):
    response = client.post("/api/auth/forgot-password", json={"email": email})
    assert response.status_code == 202, response.get_json()
    return response


def test_outbox_writes_a_complete_message(make_app, tmp_path, clock):
    outbox = tmp_path / "outbox"
    client = make_app(MAIL_OUTBOX_DIR=str(outbox), MAIL_FROM="Example <auth@example.org>")
    client = client.test_client()
    signup(client, EMAIL, PASSWORD)
    before = clock()
    forgot(client)

    [message] = outbox_messages(outbox)
    [path] = outbox.glob("*.eml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a live token
    assert not list(outbox.glob(".*.part"))
    assert message["From"] == "Example <auth@example.org>"
    assert message["To"] == EMAIL
    assert message["Subject"] == "Reset your password"
    assert message["Auto-Submitted"] == "auto-generated"
    assert abs((parsedate_to_datetime(message["Date"]) - before).total_seconds()) < 60
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@example.org>")
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    token = reset_token(message)
    assert f'href="http://localhost:3000/reset-password?token={token}"' in html_body(message)
    assert f"<code>{token}</code>" in html_body(message)


def test_outbox_logs_where_the_mail_is_but_not_its_token(make_app, tmp_path, logs):
    outbox = tmp_path / "outbox"
    client = make_app(MAIL_OUTBOX_DIR=str(outbox), LOG_LEVEL="DEBUG").test_client()
    signup(client, EMAIL, PASSWORD)
    forgot(client)
    [message] = outbox_messages(outbox)
    token = reset_token(message)
    [path] = outbox.glob("*.eml")
    assert token in path.read_text()
    written = [line for line in logs.lines if "mail written to outbox" in line]
    assert len(written) == 1
    assert path.name in written[0] and message["Message-ID"] in written[0]
    assert token not in logs.text()


def test_outbox_handles_an_international_address(make_app, tmp_path):
    outbox = tmp_path / "outbox"
    client = make_app(MAIL_OUTBOX_DIR=str(outbox)).test_client()
    address = "jürgen@bücher.example"
    signup(client, address, PASSWORD)
    forgot(client, address)
    [message] = outbox_messages(outbox)
    assert message["To"] == address
    assert reset_token(message)


def test_smtp_delivery_in_plain_text(make_app, servers):
    server = servers()
    client = make_app(**server.settings(), MAIL_FROM="authsvc <no-reply@example.org>")
    client = client.test_client()
    signup(client, EMAIL, PASSWORD)
    forgot(client)

    [message] = wait_for_messages(server.inbox)
    [envelope] = server.inbox.envelopes
    assert envelope.mail_from == "no-reply@example.org"
    assert envelope.rcpt_tos == [EMAIL]
    assert server.inbox.encrypted == [False]
    assert parseaddr(message["To"])[1] == EMAIL
    assert message["Date"] and message["Message-ID"]
    assert "/reset-password?token=" in text_body(message)
    assert "/reset-password?token=" in html_body(message)


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_smtp_delivery_over_tls_with_login(make_app, servers, cert, tls):
    server = servers(tls, cert)
    settings = server.settings(
        tls,
        SMTP_CA_FILE=str(cert.cert_file),
        SMTP_USERNAME=SMTP_USER,
        SMTP_PASSWORD=SMTP_SECRET,
    )
    client = make_app(**settings).test_client()
    signup(client, EMAIL, PASSWORD)
    forgot(client)

    [message] = wait_for_messages(server.inbox)
    assert server.inbox.encrypted == [True]
    assert [ok for _, ok in server.inbox.auth] == [True]
    assert reset_token(message)


def test_certificate_is_verified(make_app, servers, cert, logs):
    """Without SMTP_CA_FILE the self-signed server is not trusted: nothing is sent."""
    server = servers("starttls", cert)
    settings = server.settings("starttls", SMTP_USERNAME=SMTP_USER, SMTP_PASSWORD=SMTP_SECRET)
    client = make_app(**settings, LOG_LEVEL="DEBUG").test_client()
    signup(client, EMAIL, PASSWORD)
    forgot(client)
    assert mail.wait_until_sent(15)
    assert server.inbox.envelopes == []
    assert server.inbox.auth == []  # the credentials never left
    failures = [line for line in logs.lines if "mail delivery failed" in line]
    assert len(failures) == 1
    assert "SSLCertVerificationError" in failures[0]


def test_wrong_smtp_password_is_logged_without_secrets(make_app, servers, cert, logs):
    server = servers("ssl", cert)
    settings = server.settings(
        "ssl",
        SMTP_CA_FILE=str(cert.cert_file),
        SMTP_USERNAME=SMTP_USER,
        SMTP_PASSWORD="not-the-smtp-secret",
    )
    client = make_app(**settings, LOG_LEVEL="DEBUG").test_client()
    signup(client, EMAIL, PASSWORD)
    forgot(client)
    assert mail.wait_until_sent(15)
    assert server.inbox.envelopes == []
    assert server.inbox.auth and not any(ok for _, ok in server.inbox.auth)
    failures = [line for line in logs.lines if "mail delivery failed" in line]
    assert len(failures) == 1
    assert "SMTPAuthenticationError" in failures[0]
    text = logs.text()
    assert "not-the-smtp-secret" not in text
    assert PASSWORD not in text


def test_mail_server_down_still_answers_202(make_app, logs):
    """Nothing listens on the port: the caller sees the usual 202, the operator a log line."""
    down = make_app(
        MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), LOG_LEVEL="DEBUG"
    ).test_client()
    signup(down, EMAIL, PASSWORD)
    known = forgot(down)
    unknown = forgot(down, "nobody@example.com")
    assert known.get_json() == unknown.get_json()
    assert mail.wait_until_sent(15)
    failures = [line for line in logs.lines if "mail delivery failed" in line]
    assert len(failures) == 1
    assert "ConnectionRefusedError" in failures[0]
    assert '"level":"error"' in failures[0]


def test_send_mail_returns_the_message_id_it_sends(make_app, servers, clock):
    server = servers()
    settings = make_app(**server.settings()).config["AUTHSVC_SETTINGS"]
    message_id = mail.send_mail(
        settings,
        to="bob@example.com",
        subject="Hello",
        text="plain body\n",
        html="<p>html body</p>\n",
        now=clock(),
    )
    [message] = wait_for_messages(server.inbox)
    assert message["Message-ID"] == message_id
    assert text_body(message) == "plain body\n"
    assert html_body(message) == "<p>html body</p>\n"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"SMTP_USERNAME": "u", "SMTP_TLS": "none"}, "SMTP_USERNAME needs SMTP_TLS"),
        ({"SMTP_TLS": "tls"}, "SMTP_TLS must be one of"),
        ({"MAIL_BACKEND": "console"}, "MAIL_BACKEND must be one of"),
        ({"MAIL_FROM": "no address here"}, "MAIL_FROM must be an address"),
        ({"MAIL_FROM": "a@b.org\r\nBcc: x@y.org"}, "MAIL_FROM must be an address"),
        ({"FRONTEND_URL": "app.example.org"}, "FRONTEND_URL must be"),
        ({"FRONTEND_URL": "javascript:alert(1)"}, "FRONTEND_URL must be"),
        ({"SMTP_PORT": 0}, "SMTP_PORT must be"),
        ({"SMTP_TIMEOUT": 0}, "SMTP_TIMEOUT must be"),
        ({"SMTP_CA_FILE": "/nonexistent/ca.pem"}, "SMTP_CA_FILE must name"),
        ({"PASSWORD_RESET_TTL": 0}, "PASSWORD_RESET_TTL must be"),
    ],
)
def test_mail_settings_are_validated(overrides, complaint, tmp_path):
    with pytest.raises(ConfigError, match=complaint):
        load_settings(overrides, environ={}, instance_path=str(tmp_path))


def test_mail_settings_defaults(tmp_path):
    settings = load_settings({}, environ={}, instance_path=str(tmp_path))
    assert settings.MAIL_BACKEND == "outbox"
    assert str(tmp_path / "outbox") == settings.MAIL_OUTBOX_DIR
    assert settings.PASSWORD_RESET_TTL == 1800
    assert "SMTP_PASSWORD" not in repr(settings)
