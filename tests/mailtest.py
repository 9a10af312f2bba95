"""Real mail for tests: an aiosmtpd server on loopback (plain, STARTTLS or implicit TLS, with
login), a self-signed certificate made on the spot, and readers for delivered messages."""

from __future__ import annotations

import base64
import email
import ipaddress
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authsvc import mail
from authsvc.logs import JsonFormatter
from conftest import free_port

SMTP_USER = "mailer"
SMTP_SECRET = "smtp-secret-Zq8"  # what the test server accepts; the app is configured with it

# aiosmtpd warns about its own deprecated attributes on every login; not ours to fix.
logging.getLogger("mail.log").setLevel(logging.ERROR)

# The token as it appears in the message: the API-client copy and the link's query.
TOKEN_IN_LINK = re.compile(r"/reset-password\?token=([A-Za-z0-9_-]+)")


class Inbox:
    """What the SMTP server accepted: envelopes and parsed messages, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.envelopes: list[Any] = []
        self.auth: list[tuple[str, bool]] = []
        self.encrypted: list[bool] = []  # per message: did it arrive over TLS?

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.envelopes.append(envelope)
            self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:  # type: ignore[no-untyped-def]
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_SECRET.encode()
        )
        with self._lock:
            self.auth.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)  # False: the server answers 535

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [
                email.message_from_bytes(e.original_content or e.content, policy=policy.default)
                for e in self.envelopes
            ]


class SmtpServer:
    """aiosmtpd on 127.0.0.1: tls=None|"starttls"|"ssl"; login offered (and recorded) with TLS."""

    def __init__(self, tls: str | None = None, cert: Certificate | None = None) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if tls == "starttls":
            assert cert is not None
            kwargs.update(
                tls_context=cert.server_context(),
                require_starttls=True,
                auth_required=True,
                authenticator=self.inbox.authenticate,
            )
        elif tls == "ssl":
            assert cert is not None
            kwargs.update(
                ssl_context=cert.server_context(),
                # aiosmtpd counts only STARTTLS as TLS; this whole connection is TLS. It
                # offers AUTH (and records the login) without insisting on it.
                auth_require_tls=False,
                authenticator=self.inbox.authenticate,
            )
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, server_hostname="localhost", **kwargs
        )
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def settings(self, tls: str = "none", **extra: Any) -> dict[str, Any]:
        return {
            "MAIL_BACKEND": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": self.port,
            "SMTP_TLS": tls,
            "SMTP_TIMEOUT": 5,
            **extra,
        }


class Certificate:
    """A self-signed EC certificate for localhost and 127.0.0.1, written to `directory`."""

    def __init__(self, directory: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authsvc test SMTP")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert_file = directory / "smtp-cert.pem"
        self.key_file = directory / "smtp-key.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


# Every registration mails one of these; tests about other mail look past them.
VERIFICATION_SUBJECT = "Confirm your email address"


def _kept(messages: list[EmailMessage], verification: bool) -> list[EmailMessage]:
    if verification:
        return messages
    return [m for m in messages if m["Subject"] != VERIFICATION_SUBJECT]


def wait_for_messages(
    inbox: Inbox, count: int = 1, timeout: float = 15, *, verification: bool = False
) -> list[EmailMessage]:
    """The inbox's messages once there are `count` (mail leaves on a background thread);
    registration's verification messages only with `verification`."""
    mail.wait_until_sent(timeout)
    deadline = time.monotonic() + timeout
    while len(_kept(inbox.messages, verification)) < count and time.monotonic() < deadline:
        time.sleep(0.05)  # delivered by another process (gunicorn)
    messages = _kept(inbox.messages, verification)
    assert len(messages) >= count, f"expected {count} message(s), got {len(messages)}"
    return messages


def outbox_messages(directory: Path, *, verification: bool = False) -> list[EmailMessage]:
    """The .eml files of an outbox, oldest first, parsed (verification messages only with
    `verification`)."""
    mail.wait_until_sent(15)
    return _kept(
        [
            email.message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in sorted(directory.glob("*.eml"))
        ],
        verification,
    )


def text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")  # wire format has CRLF line ends


def html_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


def reset_token(message: EmailMessage) -> str:
    """The reset token of a reset message, read from its link (and checked against its copy)."""
    text = text_body(message)
    match = TOKEN_IN_LINK.search(text)
    assert match, text
    token = match.group(1)
    assert f"\n{token}\n" in text  # the plain copy for API clients
    return token


class LogLines(logging.Handler):
    """Every record of the `authsvc` loggers, formatted as the service writes them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._guard:
            self.lines.append(line)

    def text(self) -> str:
        with self._guard:
            return "\n".join(self.lines)


def capture_logs() -> Iterator[LogLines]:
    """Attach a LogLines handler to the `authsvc` logger at DEBUG; restore on exit.

    An app created meanwhile resets the level to its LOG_LEVEL: give it LOG_LEVEL="DEBUG".
    """
    logger = logging.getLogger("authsvc")
    handler = LogLines()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def signup(client: Any, email: str, password: str) -> dict[str, Any]:
    """Register on `client` (any app) and return the TokenPair."""
    response = client.post("/api/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def sign_in(client: Any, email: str, password: str, user_agent: str = "device") -> dict[str, Any]:
    response = client.post(
        "/api/auth/login",
        json={"email": email, "password": password},
        headers={"User-Agent": user_agent},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def access_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of an access token: enough to compare `sid`s."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
