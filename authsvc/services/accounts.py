"""Accounts: register (with a verification mail), log in, create users (CLI); email
normalisation and password policy."""

from __future__ import annotations

import uuid
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import queries as q
from ..db import transaction
from ..errors import (
    AccountDisabled,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    ValidationFailed,
    WeakPassword,
)
from ..models import AuthSession, User
from ..runtime import Runtime
from ..security.passwords import password_problem
from .common import ClientInfo, TokenPair, UserInfo
from .email_tokens import send_verification
from .events import record_event
from .notices import mail_after_commit, notify
from .tokens import start_session

REGISTRATION_ACCEPTED = "Check your inbox: a message to this address says how to finish signing up."

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit


def normalise_email(email: str) -> str:
    """Trimmed, validated and lower-cased: the one form stored and compared."""
    email = email.strip()
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValidationFailed.field("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed.field("email", str(exc)) from None
    if len(result.local_part) > 64:  # RFC 5321 §4.5.3.1.1; email-validator lets it pass
        raise ValidationFailed.field("email", "the part before the @ must be at most 64 characters")
    return result.normalized.lower()


def check_password_policy(rt: Runtime, password: str, email: str) -> None:
    s = rt.settings
    problem = password_problem(password, email, s.PASSWORD_MIN_LENGTH, s.PASSWORD_MAX_LENGTH)
    if problem:
        raise WeakPassword(f"password {problem}")


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = " ".join(name.split())
    return name or None


def _new_user(rt: Runtime, email: str, password: str, name: str | None) -> User:
    email = normalise_email(email)
    check_password_policy(rt, password, email)
    now = rt.clock()
    return User(
        email=email,
        name=_clean_name(name),
        password_hash=rt.passwords.hash(password),  # slow; before the write lock
        created_at=now,
        password_changed_at=now,
    )


def _add_user(db: Session, user: User) -> UserInfo:
    """Within the caller's transaction; EmailTaken if the address is registered."""
    if db.scalar(select(User.id).where(User.email == user.email)) is not None:
        raise EmailTaken("an account with this email already exists")
    db.add(user)
    try:
        db.flush()
    except IntegrityError:  # a concurrent registration won the unique index
        raise EmailTaken("an account with this email already exists") from None
    return UserInfo(user.id, user.email, user.name, user.created_at, email_verified=False)


def create_user(
    db: Session, rt: Runtime, email: str, password: str, name: str | None = None
) -> UserInfo:
    """Add a user (policy-checked); EmailTaken if the address is registered (the CLI)."""
    user = _new_user(rt, email, password, name)
    with transaction(db):
        return _add_user(db, user)


def register(
    db: Session, rt: Runtime, email: str, password: str, name: str | None, client: ClientInfo
) -> TokenPair:
    """Create the account, mail it a verification link, and log it in on this device."""
    user = _new_user(rt, email, password, name)
    with transaction(db):
        info = _add_user(db, user)
        send_verification(db, rt, info.id, info.email, user.created_at)
        pair = start_session(db, rt, info, user.password_hash, client, user.created_at)
        _record_login(db, pair, client, user.created_at, {"method": "register"})
    return pair


def register_pending(
    db: Session, rt: Runtime, email: str, password: str, name: str | None, client: ClientInfo
) -> None:
    """REQUIRE_VERIFIED_EMAIL: create the account and mail it a verification link; no
    session until the address is verified. A taken address gets a mail saying someone
    tried, and the caller the same answer: registration does not enumerate accounts."""
    user = _new_user(rt, email, password, name)  # the same argon2 cost either way
    try:
        with transaction(db):
            info = _add_user(db, user)
            send_verification(db, rt, info.id, info.email, user.created_at)
    except EmailTaken:
        with transaction(db):
            mail_after_commit(
                db,
                rt.settings,
                "email_taken",
                to=user.email,
                now=user.created_at,
                attempt="signup",
            )


def login(db: Session, rt: Runtime, email: str, password: str, client: ClientInfo) -> TokenPair:
    """Check the password (same cost for unknown emails) and start a session; the hash is
    upgraded when the argon2 parameters have changed."""
    try:
        email = normalise_email(email)
    except ValidationFailed:
        email = None  # cannot exist; still pay for one argon2 verification below
    found = db.execute(q.CREDENTIALS, {"email": email}).first() if email else None
    # The slow hash runs outside any transaction; the write below takes the lock only after.
    ok = rt.passwords.verify(found.password_hash if found else None, password)
    if found is None or not ok:
        record_failed_login(
            db,
            rt,
            client,
            found.id if found else None,
            details=None if found else {"reason": "unknown_email"},
        )
        raise InvalidCredentials("invalid email or password")
    if not found.active:
        record_failed_login(db, rt, client, found.id, details={"reason": "account_disabled"})
        raise AccountDisabled("this account has been disabled")
    if rt.settings.REQUIRE_VERIFIED_EMAIL and not found.email_verified:
        record_failed_login(db, rt, client, found.id, details={"reason": "email_not_verified"})
        raise EmailNotVerified("verify your email address first (see the mail we sent)")
    user = UserInfo(found.id, found.email, found.name, found.created_at, found.email_verified)
    verified_hash = found.password_hash
    new_hash = rt.passwords.hash(password) if rt.passwords.needs_rehash(verified_hash) else None
    now = rt.clock()
    with transaction(db):
        if new_hash is not None:
            replaced = db.execute(
                q.REPLACE_PASSWORD_HASH,
                {"uid": user.id, "verified_hash": verified_hash, "new_hash": new_hash, "now": now},
            ).first()
            if replaced is None:  # changed or reset meanwhile: the old password is no key
                raise InvalidCredentials("invalid email or password")
            verified_hash = new_hash
        if rt.settings.NOTIFY_NEW_DEVICE and _new_device(db, user.id, client):
            notify(
                db,
                rt.settings,
                "NOTIFY_NEW_DEVICE",
                "new_device",
                to=user.email,
                now=now,
                user_agent=client.user_agent,
                ip_address=client.ip_address,
            )
        pair = start_session(db, rt, user, verified_hash, client, now)
        _record_login(db, pair, client, now)
    return pair


def _new_device(db: Session, user_id: uuid.UUID, client: ClientInfo) -> bool:
    """No session of the user's (live or kept for the record) came from this user-agent."""
    seen = select(AuthSession.id).where(
        AuthSession.user_id == user_id,
        AuthSession.user_agent.is_not_distinct_from(client.user_agent),
    )
    return db.scalar(seen.limit(1)) is None


def _record_login(
    db: Session,
    pair: TokenPair,
    client: ClientInfo,
    now: datetime,
    details: dict[str, str] | None = None,
) -> None:
    record_event(
        db,
        "login_succeeded",
        now=now,
        client=client,
        user_id=pair.user.id,
        session_id=pair.session_id,
        details=details,
    )


def record_failed_login(
    db: Session,
    rt: Runtime,
    client: ClientInfo,
    user_id: uuid.UUID | None,
    *,
    session_id: uuid.UUID | None = None,
    details: dict[str, str] | None = None,
) -> None:
    """A refused password (a login, or the check before an account change): its event."""
    with transaction(db):
        record_event(
            db,
            "login_failed",
            now=rt.clock(),
            client=client,
            user_id=user_id,
            session_id=session_id,
            details=details,
        )
