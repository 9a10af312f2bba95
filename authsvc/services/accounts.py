"""Accounts: register, log in, create users (CLI); email normalisation and password policy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db import begin_write
from ..errors import EmailTaken, InvalidCredentials, ValidationFailed, WeakPassword
from ..models import User
from ..runtime import Runtime
from ..security.passwords import password_problem
from .common import ClientInfo, TokenPair
from .events import record_event
from .fastpath import Credentials, fast_path, start_login_session
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


def login(
    engine: Engine,
    open_session: Callable[[], Session],
    rt: Runtime,
    email: str,
    password: str,
    client: ClientInfo,
) -> TokenPair:
    """Check the password (same cost for unknown emails) and start a session. A successful
    login needs no ORM session; `open_session` gives one to a failure or a hash upgrade."""
    try:
        email = normalise_email(email)
    except ValidationFailed:
        email = None  # cannot exist; still pay for one argon2 verification below
    fast = fast_path(engine)
    found = fast.credentials(email) if email else None
    # The slow hash runs outside any transaction; the writes below take the lock only after.
    ok = rt.passwords.verify(found.password_hash if found else None, password)
    now = rt.clock()
    if found is None or not ok:
        db = open_session()
        begin_write(db)
        record_event(
            db,
            "login_failed",
            now=now,
            client=client,
            user_id=found.user.id if found else None,
            details=None if found else {"reason": "unknown_email"},
        )
        db.commit()
        raise InvalidCredentials("invalid email or password")
    if rt.passwords.needs_rehash(found.password_hash):
        return _login_upgrading_hash(open_session(), rt, found, password, client, now)
    # The common case, off the ORM session: one statement on PostgreSQL.
    return start_login_session(fast, rt, found.user, found.password_hash, client, now)


def _login_upgrading_hash(
    db: Session, rt: Runtime, found: Credentials, password: str, client: ClientInfo, now: datetime
) -> TokenPair:
    """Start the session and store the password's hash under the current argon2 parameters
    (the first login after they changed), through the ORM."""
    new_hash = rt.passwords.hash(password)  # before the write lock, like the verification
    begin_write(db)
    # Only the hash just verified is replaced: a password changed meanwhile stays changed.
    db.execute(
        update(User)
        .where(User.id == found.user.id, User.password_hash == found.password_hash)
        .values(password_hash=new_hash)
    )
    user = db.get(User, found.user.id)
    if user is None:  # deleted since the lookup
        db.rollback()
        raise InvalidCredentials("invalid email or password")
    pair = start_session(db, rt, user, client, now)
    record_event(
        db, "login_succeeded", now=now, client=client, user_id=user.id, session_id=pair.session_id
    )
    db.commit()
    return pair
