"""Single-use tokens mailed to an address: verify it, or move an account to it.

Like reset tokens: opaque, only their SHA-256 stored, one live token per account and purpose
(a newer one voids the older), each purpose with its own lifetime.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from ..models import EmailToken
from ..runtime import Runtime
from ..security.tokens import MAX_TOKEN_LENGTH, hash_token, new_token
from .notices import frontend_link, mail_after_commit

VERIFY = "verify"
CHANGE = "change"

tokens = EmailToken.__table__


def _ttl(rt: Runtime, purpose: str) -> int:
    s = rt.settings
    return s.EMAIL_VERIFICATION_TTL if purpose == VERIFY else s.EMAIL_CHANGE_TTL


def void_email_tokens(
    db: Session, user_id: uuid.UUID, now: datetime, purpose: str | None = None
) -> None:
    """Within the caller's transaction: kill the user's live tokens (of one purpose)."""
    where = [tokens.c.user_id == user_id, tokens.c.used_at.is_(None)]
    if purpose is not None:
        where.append(tokens.c.purpose == purpose)
    db.execute(update(tokens).where(*where).values(used_at=now))


def issue_email_token(
    db: Session, rt: Runtime, user_id: uuid.UUID, purpose: str, email: str, now: datetime
) -> str:
    """Within the caller's transaction: a new token for `email`, voiding older ones."""
    void_email_tokens(db, user_id, now, purpose)
    raw = new_token()
    db.execute(
        insert(tokens).values(
            user_id=user_id,
            purpose=purpose,
            email=email,
            token_hash=hash_token(raw),
            created_at=now,
            expires_at=now + timedelta(seconds=_ttl(rt, purpose)),
        )
    )
    return raw


def spend_email_token(db: Session, raw: str, purpose: str, now: datetime) -> Any:
    """Within the caller's transaction: use a live token once; its (user_id, email) row, or
    None. The conditional UPDATE decides between concurrent uses of one token."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    return db.execute(
        update(tokens)
        .where(
            tokens.c.token_hash == hash_token(raw),
            tokens.c.purpose == purpose,
            tokens.c.used_at.is_(None),
            tokens.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(tokens.c.user_id, tokens.c.email)
    ).first()


def send_verification(
    db: Session, rt: Runtime, user_id: uuid.UUID, email: str, now: datetime
) -> None:
    """Within the caller's transaction: mail `email` a verification link (after commit)."""
    raw = issue_email_token(db, rt, user_id, VERIFY, email, now)
    mail_after_commit(
        db,
        rt.settings,
        "verify_email",
        to=email,
        now=now,
        link=frontend_link(rt.settings, "/verify-email", raw),
        token=raw,
        hours=max(1, rt.settings.EMAIL_VERIFICATION_TTL // 3600),
    )


def send_change_confirmation(
    db: Session, rt: Runtime, user_id: uuid.UUID, new_email: str, now: datetime
) -> None:
    """Within the caller's transaction: mail the new address its confirmation link."""
    raw = issue_email_token(db, rt, user_id, CHANGE, new_email, now)
    mail_after_commit(
        db,
        rt.settings,
        "email_change_confirm",
        to=new_email,
        now=now,
        link=frontend_link(rt.settings, "/confirm-email-change", raw),
        token=raw,
        minutes=max(1, rt.settings.EMAIL_CHANGE_TTL // 60),
    )
