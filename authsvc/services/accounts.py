"""Accounts: register, log in, create users (CLI); email normalisation and password policy."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db import begin_write
from ..errors import EmailTaken, InvalidCredentials, ValidationFailed, WeakPassword
from ..models import User
from ..runtime import Runtime
from ..security.passwords import password_problem
from .common import ClientInfo, TokenPair
from .events import record_event
from .tokens import start_session

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


def create_user(
    db: Session, rt: Runtime, email: str, password: str, name: str | None = None
) -> User:
    """Add a user (policy-checked) to the caller's transaction; EmailTaken if it exists."""
    email = normalise_email(email)
    check_password_policy(rt, password, email)
    now = rt.clock()
    user = User(
        email=email,
        name=_clean_name(name),
        password_hash=rt.passwords.hash(password),
        created_at=now,
        password_changed_at=now,
    )
    begin_write(db)
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        db.rollback()
        raise EmailTaken("an account with this email already exists")
    db.add(user)
    try:
        db.flush()
    except IntegrityError:  # a concurrent registration won the unique index
        db.rollback()
        raise EmailTaken("an account with this email already exists") from None
    return user


def register(
    db: Session, rt: Runtime, email: str, password: str, name: str | None, client: ClientInfo
) -> TokenPair:
    """Create the account and log it in on this device."""
    user = create_user(db, rt, email, password, name)
    pair = start_session(db, rt, user, client, user.created_at)
    record_event(
        db,
        "login_succeeded",
        now=user.created_at,
        client=client,
        user_id=user.id,
        session_id=pair.session_id,
        details={"method": "register"},
    )
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise EmailTaken("an account with this email already exists") from None
    return pair


def login(db: Session, rt: Runtime, email: str, password: str, client: ClientInfo) -> TokenPair:
    """Check the password (same cost for unknown emails) and start a session."""
    try:
        email = normalise_email(email)
    except ValidationFailed:
        email = None  # cannot exist; still pay for one argon2 verification below
    user = db.scalar(select(User).where(User.email == email)) if email else None
    ok = rt.passwords.verify(user.password_hash if user else None, password)
    now = rt.clock()
    if user is not None:
        db.expunge(user)  # keep it loaded across the write transaction below
    # The slow hash ran outside the write transaction; take the write lock only now.
    begin_write(db)
    if not ok:
        record_event(
            db,
            "login_failed",
            now=now,
            client=client,
            user_id=user.id if user else None,
            details=None if user else {"reason": "unknown_email"},
        )
        db.commit()
        raise InvalidCredentials("invalid email or password")
    assert user is not None
    if rt.passwords.needs_rehash(user.password_hash):
        user.password_hash = rt.passwords.hash(password)
        db.execute(update(User).where(User.id == user.id).values(password_hash=user.password_hash))
    pair = start_session(db, rt, user, client, now)
    record_event(
        db, "login_succeeded", now=now, client=client, user_id=user.id, session_id=pair.session_id
    )
    db.commit()
    return pair
