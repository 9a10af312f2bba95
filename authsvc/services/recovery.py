"""Passwords: forgotten (emailed single-use reset token), reset with it, and changed.

Lock order, on every path here: the user's row first, then its reset tokens, then refresh
tokens, then sessions, so that these use cases never deadlock each other on PostgreSQL.
"""

from __future__ import annotations

import html
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import insert, literal, select, update
from sqlalchemy.orm import Session

from .. import mail
from .. import queries as q
from ..config import Settings
from ..db import transaction
from ..errors import InvalidCredentials, InvalidResetToken, InvalidToken, WeakPassword
from ..models import PasswordResetToken, User
from ..runtime import Runtime
from ..security.tokens import MAX_TOKEN_LENGTH, hash_token, new_token
from .accounts import check_password_policy, normalise_email
from .common import ClientInfo, TokenPair, UserInfo
from .events import record_event
from .tokens import end_all_sessions, reissue_session_ending_others, start_session

RESET_REQUEST_ACCEPTED = (
    "If an account exists for this email address, a link to reset its password is on its way."
)


def reset_link(settings: Settings, token: str) -> str:
    """FRONTEND_URL/reset-password?token=… — from configuration, never from a request's Host."""
    return f"{settings.FRONTEND_URL.rstrip('/')}/reset-password?{urlencode({'token': token})}"


def _reset_mail(settings: Settings, token: str) -> tuple[str, str, str]:
    """Subject, text and HTML of the reset message."""
    link = reset_link(settings, token)
    minutes = max(1, settings.PASSWORD_RESET_TTL // 60)
    subject = "Reset your password"
    text = (
        "Someone, hopefully you, asked to reset the password of your account.\n\n"
        f"Choose a new password here (the link works once, within {minutes} minutes):\n\n"
        f"{link}\n\n"
        "Apps that use the API directly can send this reset token instead:\n\n"
        f"{token}\n\n"
        "If you did not ask for this, ignore this message: your password has not changed.\n"
    )
    link_html, token_html = html.escape(link), html.escape(token)
    body_html = (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8"><title>Reset your password</title></head><body>\n'
        "<p>Someone, hopefully you, asked to reset the password of your account.</p>\n"
        f'<p><a href="{link_html}">Choose a new password</a> '
        f"(the link works once, within {minutes} minutes).</p>\n"
        "<p>Apps that use the API directly can send this reset token instead:<br>\n"
        f"<code>{token_html}</code></p>\n"
        "<p>If you did not ask for this, ignore this message: "
        "your password has not changed.</p>\n"
        "</body></html>\n"
    )
    return subject, text, body_html


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
        subject, text, body_html = _reset_mail(rt.settings, raw)
        mail.send_mail(
            rt.settings, to=user.email, subject=subject, text=text, html=body_html, now=now
        )


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
            select(User.id, User.email, User.name, User.created_at)
            .where(User.id == owner.id)
            .with_for_update()
        ).first()
        # The conditional UPDATE decides: of concurrent requests with one token, one spends it.
        spent = db.execute(
            update(PasswordResetToken)
            .where(*live, PasswordResetToken.user_id == owner.id)
            .values(used_at=now)
            .returning(PasswordResetToken.id)
        ).first()
        if user is None or spent is None:
            raise InvalidResetToken("the reset token is invalid, expired or already used")
        db.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=password_hash, password_changed_at=now)
        )
        _void_reset_tokens(db, user.id, now)  # any other link sent before this reset
        revoked = end_all_sessions(db, user.id, now, "password_reset")
        pair = start_session(db, rt, UserInfo(*user), password_hash, client, now)
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
        with transaction(db):
            record_event(
                db,
                "login_failed",
                now=rt.clock(),
                client=client,
                user_id=user.id,
                session_id=session_id,
                details={"method": "change_password"},
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
    return pair
