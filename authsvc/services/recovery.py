"""Passwords: forgotten (emailed single-use reset token), reset with it, and changed.

Lock order, on every path here: the user's row first, then its reset tokens, then refresh
tokens, then sessions, so that these use cases never deadlock each other on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from .. import mail_templates
from .. import queries as q
from ..config import Settings
from ..db import transaction
from ..errors import (
    AccountDisabled,
    InvalidCredentials,
    InvalidResetToken,
    InvalidToken,
    WeakPassword,
)
from ..models import PasswordResetToken, User
from ..runtime import Runtime
from ..security.tokens import MAX_TOKEN_LENGTH, hash_token, new_token
from .accounts import check_password_policy, normalise_email, record_failed_login
from .common import ClientInfo, TokenPair, UserInfo
from .events import record_event
from .notices import frontend_link, notify
from .tokens import end_all_sessions, reissue_session_ending_others, start_session

RESET_REQUEST_ACCEPTED = (
    "If an account exists for this email address, a link to reset its password is on its way."
)


def _send_reset_mail(settings: Settings, to: str, token: str, now: datetime) -> None:
    """The reset message (template reset_password), with FRONTEND_URL/reset-password?token=…"""
    mail_templates.send(
        settings,
        "reset_password",
        to=to,
        now=now,
        link=frontend_link(settings, "/reset-password", token),
        token=token,
        minutes=max(1, settings.PASSWORD_RESET_TTL // 60),
    )


def _void_reset_tokens(db: Session, user_id: uuid.UUID, now: datetime) -> None:
    db.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )


def _check_new_password(rt: Runtime, password: str, email: str) -> None:
    try:
        check_password_policy(rt, password, email)
    except WeakPassword as exc:
        raise WeakPassword(exc.detail, field="new_password") from None


def forgot_password(db: Session, rt: Runtime, email: str, client: ClientInfo) -> None:
    """Email a reset token if the account exists; the same work and answer if it does not.

    The mail leaves on a background thread: a slow or failing mail server shows neither
    in the response nor in its timing.
    """
    email = normalise_email(email)  # 422 for what is not an email address at all
    now = rt.clock()
    raw = new_token()
    with transaction(db):
        # Locking the user's row serialises concurrent requests: exactly one token stays live.
        user = db.execute(
            select(User.id, User.email).where(User.email == email).with_for_update()
        ).first()
        # An unknown email runs the same statements against an id that matches nothing: the
        # INSERT … SELECT adds one row for an account and none otherwise.
        user_id = user.id if user else uuid.uuid4()
        _void_reset_tokens(db, user_id, now)
        expires = now + timedelta(seconds=rt.settings.PASSWORD_RESET_TTL)
        db.execute(
            insert(PasswordResetToken).from_select(
                ["user_id", "token_hash", "created_at", "expires_at"],
                select(
                    User.id,
                    literal(hash_token(raw), PasswordResetToken.token_hash.type),
                    literal(now, PasswordResetToken.created_at.type),
                    literal(expires, PasswordResetToken.expires_at.type),
                ).where(User.id == user_id),
            )
        )
        record_event(
            db,
            "password_reset_requested",
            now=now,
            client=client,
            user_id=user.id if user else None,
            details=None if user else {"reason": "unknown_email"},
        )
    if user is not None:
        _send_reset_mail(rt.settings, user.email, raw, now)


def reset_password(
    db: Session, rt: Runtime, raw: str, new_password: str, client: ClientInfo
) -> TokenPair:
    """Spend a reset token: set the password, end every session, log in on this device."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise InvalidResetToken("the reset token is invalid, expired or already used")
    now = rt.clock()
    token_hash = hash_token(raw)
    live = (
        PasswordResetToken.token_hash == token_hash,
        PasswordResetToken.used_at.is_(None),
        PasswordResetToken.expires_at > now,
    )
    owner = db.execute(
        select(User.id, User.email)
        .join(PasswordResetToken, PasswordResetToken.user_id == User.id)
        .where(*live)
    ).first()
    if owner is None:
        raise InvalidResetToken("the reset token is invalid, expired or already used")
    # Policy before spending the token: a rejected password leaves the link usable.
    _check_new_password(rt, new_password, owner.email)
    password_hash = rt.passwords.hash(new_password)  # slow; outside the write transaction

    with transaction(db):
        user = db.execute(
            select(*q.user_fields(), q.account_active().label("active"))
            .where(User.id == owner.id)
            .with_for_update()
        ).first()
        if user is not None and not user.active:
            raise AccountDisabled("this account has been disabled")
        # The conditional UPDATE decides: of concurrent requests with one token, one spends it.
        spent = db.execute(
            update(PasswordResetToken)
            .where(*live, PasswordResetToken.user_id == owner.id)
            .values(used_at=now)
            .returning(PasswordResetToken.id)
        ).first()
        if user is None or spent is None:
            raise InvalidResetToken("the reset token is invalid, expired or already used")
        # The mail reached the address: a completed reset verifies it.
        db.execute(
            update(User)
            .where(User.id == user.id)
            .values(
                password_hash=password_hash,
                password_changed_at=now,
                email_verified_at=func.coalesce(
                    User.email_verified_at, literal(now, User.email_verified_at.type)
                ),
            )
        )
        _void_reset_tokens(db, user.id, now)  # any other link sent before this reset
        revoked = end_all_sessions(db, user.id, now, "password_reset")
        info = UserInfo(user.id, user.email, user.name, user.created_at, email_verified=True)
        pair = start_session(db, rt, info, password_hash, client, now)
        notify(
            db, rt.settings, "NOTIFY_PASSWORD_RESET", "password_reset_done", to=user.email, now=now
        )
        record_event(
            db,
            "password_reset",
            now=now,
            client=client,
            user_id=user.id,
            session_id=pair.session_id,
            details={"revoked_sessions": revoked},
        )
    return pair


def change_password(
    db: Session,
    rt: Runtime,
    user: UserInfo,
    session_id: uuid.UUID,
    current_password: str,
    new_password: str,
    client: ClientInfo,
) -> TokenPair:
    """Check the current password, set the new one, end every other session, and give this
    session a new refresh token (its old ones stop working)."""
    verified_hash = db.scalar(select(User.password_hash).where(User.id == user.id))
    if verified_hash is None:  # the account was deleted since the bearer check
        raise InvalidToken("session has ended")
    _check_new_password(rt, new_password, user.email)
    # Both argon2 runs happen before the write lock is taken.
    if not rt.passwords.verify(verified_hash, current_password):
        record_failed_login(
            db, rt, client, user.id, session_id=session_id, details={"method": "change_password"}
        )
        raise InvalidCredentials("the current password is incorrect")
    new_hash = rt.passwords.hash(new_password)
    now = rt.clock()
    with transaction(db):
        # Only if the hash is still the one just verified: a concurrent change or reset wins.
        changed = db.execute(
            q.REPLACE_PASSWORD_HASH,
            {"uid": user.id, "verified_hash": verified_hash, "new_hash": new_hash, "now": now},
        ).first()
        if changed is None:
            raise InvalidCredentials("the current password is incorrect")
        _void_reset_tokens(db, user.id, now)
        pair, ended = reissue_session_ending_others(
            db, rt, user, session_id, client, now, "password_changed"
        )
        record_event(
            db,
            "password_changed",
            now=now,
            client=client,
            user_id=user.id,
            session_id=session_id,
            details={"revoked_sessions": ended},
        )
        notify(
            db, rt.settings, "NOTIFY_PASSWORD_CHANGED", "password_changed", to=user.email, now=now
        )
    return pair
