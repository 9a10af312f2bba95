"""Outgoing mail: the one module that talks SMTP (or writes the development outbox).

`send_mail()` only queues what to send; one background thread per process builds the MIME
message and delivers it, so a slow or unreachable mail server never shows in a response
(neither as an error nor as latency that would tell a caller more than the answer does).
Delivery failures are logged, without the body, credentials or recipients, and never
raised to the caller. Backends: `smtp` (plain, STARTTLS or implicit TLS, optional login)
and `outbox` (development: one .eml file per message in MAIL_OUTBOX_DIR, and a log line).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import smtplib
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

from .config import Settings

log = logging.getLogger("authsvc.mail")

MAX_QUEUED = 1000  # beyond this (a mail server down under a flood) new mail is dropped, logged
DRAIN_TIMEOUT = 5.0  # seconds a stopping process waits for queued mail
SEND_DELAY = 0.05  # seconds between queueing a message and starting to build it


def _sender_domain(settings: Settings) -> str:
    address = parseaddr(settings.MAIL_FROM)[1]
    return address.rpartition("@")[2] or "localhost"


@dataclass(frozen=True)
class Mail:
    """What a use case wants sent; the sender thread turns it into a MIME message."""

    to: str
    subject: str
    text: str
    html: str
    date: datetime
    message_id: str
    # Subject, text and HTML made on the sender thread (templates), instead of the above.
    render: Callable[[], tuple[str, str, str]] | None = None


def build_message(settings: Settings, mail: Mail) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) with Date and Message-ID."""
    message = EmailMessage()
    message["From"] = settings.MAIL_FROM
    message["To"] = mail.to  # already validated and normalised by the caller
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(mail.date)
    message["Message-ID"] = mail.message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    message.set_content(mail.text, cte=_transfer_encoding(mail.text))
    message.add_alternative(mail.html, subtype="html", cte=_transfer_encoding(mail.html))
    return message


def _transfer_encoding(body: str) -> str:
    # Plain ASCII stays readable (and its long links unbroken) in the .eml and the mail
    # source; RFC 5322 allows lines up to 998 characters.
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return "quoted-printable"


def deliver(settings: Settings, message: EmailMessage) -> str:
    """Deliver now, on this thread, through the configured backend; raises on failure.

    Returns a short, secret-free description of where the message went (for the log).
    """
    if settings.MAIL_BACKEND == "smtp":
        _deliver_smtp(settings, message)
        return f"smtp {settings.SMTP_HOST}:{settings.SMTP_PORT}"
    return str(_write_outbox(settings, message))


def _tls_context(settings: Settings) -> ssl.SSLContext:
    # Certificate and host name are verified; SMTP_CA_FILE adds a private CA (an internal relay).
    return ssl.create_default_context(cafile=settings.SMTP_CA_FILE or None)


def _deliver_smtp(settings: Settings, message: EmailMessage) -> None:
    timeout = settings.SMTP_TIMEOUT
    smtp: smtplib.SMTP
    if settings.SMTP_TLS == "ssl":
        smtp = smtplib.SMTP_SSL(
            settings.SMTP_HOST, settings.SMTP_PORT, timeout=timeout, context=_tls_context(settings)
        )
    else:
        smtp = smtplib.SMTP(settings.SMTP_HOST, settings.SMTP_PORT, timeout=timeout)
    with smtp:
        if settings.SMTP_TLS == "starttls":
            # Raises when the server does not offer STARTTLS: never fall back to plain text.
            smtp.starttls(context=_tls_context(settings))
        if settings.SMTP_USERNAME:
            smtp.login(settings.SMTP_USERNAME, settings.SMTP_PASSWORD)
        smtp.send_message(message)


def _write_outbox(settings: Settings, message: EmailMessage) -> Path:
    """Write `message` as an .eml file (mode 0600: it holds a live token), atomically."""
    outbox = Path(settings.MAIL_OUTBOX_DIR)
    outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
    international = not str(message["To"]).isascii()
    data = message.as_bytes(policy=policy.SMTPUTF8 if international else policy.SMTP)
    # Names sort in the order the files were written (one sender thread writes them all).
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:8]}.eml"
    # Written under a temporary name and renamed: a reader never sees half a message.
    fd, temporary = tempfile.mkstemp(dir=outbox, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, outbox / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return outbox / name


def _describe_failure(exc: BaseException) -> str:
    """What went wrong, without the message, the credentials or the recipients."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"SMTPRecipientsRefused: recipient refused ({', '.join(map(str, codes))})"
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", "replace")
        return f"{type(exc).__name__}: {exc.smtp_code} {reply}"[:300]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"[:300]


def _log(level: int, message: str, **fields: object) -> None:
    log.log(level, json.dumps({"message": message, **fields}, separators=(",", ":")))


class _Sender:
    """One background thread per process that delivers queued messages in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[float, Settings, Mail]] = queue.Queue(MAX_QUEUED)
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="authsvc-mail", daemon=True)
        self._thread.start()

    def submit(self, settings: Settings, mail: Mail) -> bool:
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait((time.monotonic(), settings, mail))
        except queue.Full:
            self._done()
            return False
        return True

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            queued_at, settings, mail = self._queue.get()
            # Let the request that queued the mail finish before this thread competes with
            # it for the GIL: otherwise only requests for existing accounts would be slower.
            time.sleep(max(0.0, queued_at + SEND_DELAY - time.monotonic()))
            try:
                # Built here, not on the request's thread: rendering MIME costs about a
                # millisecond, which only requests for existing accounts would pay.
                if mail.render is not None:
                    subject, text, html = mail.render()
                    mail = replace(mail, subject=subject, text=text, html=html, render=None)
                where = deliver(settings, build_message(settings, mail))
            except Exception as exc:
                _log(
                    logging.ERROR,
                    "mail delivery failed",
                    backend=settings.MAIL_BACKEND,
                    message_id=mail.message_id,
                    subject=mail.subject,
                    error=_describe_failure(exc),
                )
            else:
                _log(
                    logging.INFO,
                    "mail written to outbox" if settings.MAIL_BACKEND == "outbox" else "mail sent",
                    backend=settings.MAIL_BACKEND,
                    message_id=mail.message_id,
                    subject=mail.subject,
                    delivered_to=where,
                )
            finally:
                self._done()


_sender: _Sender | None = None
_sender_pid = 0
_sender_lock = threading.Lock()


def _current_sender() -> _Sender:
    """The process's sender, started on first use (and again in a forked child)."""
    global _sender, _sender_pid
    with _sender_lock:
        if _sender is None or _sender_pid != os.getpid():
            first = _sender is None
            _sender, _sender_pid = _Sender(), os.getpid()
            if first:
                atexit.register(wait_until_sent, DRAIN_TIMEOUT)
        return _sender


def send_mail(
    settings: Settings,
    *,
    to: str,
    subject: str,
    text: str = "",
    html: str = "",
    now: datetime,
    render: Callable[[], tuple[str, str, str]] | None = None,
) -> str:
    """Queue a message (text and HTML bodies) for delivery in the background. With `render`,
    the sender thread makes subject, text and HTML (`subject` then only names it in logs).

    Returns its Message-ID. Never raises for delivery problems: the sender thread logs them.
    """
    mail = Mail(
        to=to,
        subject=subject,
        text=text,
        html=html,
        date=now,
        # The sender's domain, not socket.getfqdn(): no DNS lookup, a stable right-hand side.
        message_id=make_msgid(domain=_sender_domain(settings)),
        render=render,
    )
    if not _current_sender().submit(settings, mail):
        _log(
            logging.ERROR,
            "mail queue full; message dropped",
            backend=settings.MAIL_BACKEND,
            message_id=mail.message_id,
            subject=subject,
        )
    return mail.message_id


def wait_until_sent(timeout: float = DRAIN_TIMEOUT) -> bool:
    """Wait until every queued message has been delivered or has failed (True), or timeout."""
    sender = _sender
    if sender is None or _sender_pid != os.getpid():
        return True
    return sender.wait_idle(timeout)
