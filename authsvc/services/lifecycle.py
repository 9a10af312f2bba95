"""Account states: disabled (every session ended, nothing signs in), deleted (by its owner
or an operator: sessions and tokens gone, the row deleted, its security events kept without
personal data), and the owner's export of their data."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .. import queries as q
from ..db import transaction
from ..errors import InvalidCredentials, NotFound
from ..models import AuthSession, SecurityEvent, User
from ..runtime import Runtime
from .common import ClientInfo, UserInfo
from .events import record_event
from .tokens import end_all_sessions

EXPORT_FORMAT = 1


def set_disabled(
    db: Session,
    rt: Runtime,
    user_id: uuid.UUID | None,
    disabled: bool,
    by: dict[str, Any],
    client: ClientInfo,
) -> None:
    """Disable (ending every session in the same transaction) or enable the account;
    NotFound for no account. Doing it twice changes nothing and records nothing more."""
    now = rt.clock()
    with transaction(db):
        exists = db.scalar(select(User.id).where(User.id == user_id).with_for_update())
        if exists is None:
            raise NotFound("no such account")
        changed = db.execute(
            update(User)
            .where(User.id == user_id, q.account_active() if disabled else ~q.account_active())
            .values(disabled_at=now if disabled else None)
        ).rowcount
        if not changed:
            return
        ended = end_all_sessions(db, exists, now, "account_disabled") if disabled else 0
        details = {**by, "revoked_sessions": ended} if disabled else by
        event = "account_disabled" if disabled else "account_enabled"
        record_event(db, event, now=now, client=client, user_id=exists, details=details)


def end_every_session(
    db: Session, rt: Runtime, user_id: uuid.UUID | None, by: dict[str, Any], client: ClientInfo
) -> int:
    """An operator's log-out-everywhere; how many sessions were live."""
    now = rt.clock()
    with transaction(db):
        if db.scalar(select(User.id).where(User.id == user_id)) is None:
            raise NotFound("no such account")
        ended = end_all_sessions(db, user_id, now, "admin_logout")
        record_event(
            db,
            "sessions_revoked_by_admin",
            now=now,
            client=client,
            user_id=user_id,
            details={**by, "revoked_sessions": ended},
        )
    return ended


def delete_account(
    db: Session, rt: Runtime, user_id: uuid.UUID | None, by: dict[str, Any], client: ClientInfo
) -> None:
    """Delete the account: its sessions, refresh, reset and email tokens go with the row
    (ON DELETE CASCADE); its security events stay, detached and without IP or user-agent.
    The deletion itself is recorded without the account."""
    now = rt.clock()
    with transaction(db):
        if db.scalar(select(User.id).where(User.id == user_id).with_for_update()) is None:
            raise NotFound("no such account")
        db.execute(
            update(SecurityEvent)
            .where(SecurityEvent.user_id == user_id)
            .values(user_id=None, ip_address=None, user_agent=None)
        )
        db.execute(delete(User).where(User.id == user_id))
        # By its owner: who deleted it is the account itself, and its address is personal.
        actor = client if by.get("by") != "user" else ClientInfo()
        record_event(db, "account_deleted", now=now, client=actor, details=by)


def delete_own_account(
    db: Session, rt: Runtime, user: UserInfo, session_id: uuid.UUID, password: str
) -> None:
    """The owner deletes their account, confirming with the password."""
    verified_hash = db.scalar(select(User.password_hash).where(User.id == user.id))
    if not rt.passwords.verify(verified_hash, password) or verified_hash is None:
        raise InvalidCredentials("the password is incorrect")
    delete_account(db, rt, user.id, {"by": "user"}, ClientInfo())


def export_account(db: Session, rt: Runtime, user: UserInfo, client: ClientInfo) -> dict[str, Any]:
    """Everything stored about the account, for its owner (GDPR art. 15 and 20)."""
    now = rt.clock()
    profile = db.execute(select(*q.profile_fields()).where(q.users.c.id == user.id)).first()
    if profile is None:
        raise NotFound("no such account")
    sessions = db.execute(
        select(
            AuthSession.id,
            AuthSession.created_at,
            AuthSession.last_used_at,
            AuthSession.expires_at,
            AuthSession.revoked_at,
            AuthSession.revoke_reason,
            AuthSession.user_agent,
            AuthSession.ip_address,
        )
        .where(AuthSession.user_id == user.id)
        .order_by(AuthSession.created_at.desc())
    ).all()
    events = db.execute(
        select(
            SecurityEvent.type,
            SecurityEvent.created_at,
            SecurityEvent.ip_address,
            SecurityEvent.user_agent,
            SecurityEvent.session_id,
            SecurityEvent.details,
        )
        .where(SecurityEvent.user_id == user.id)
        .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc())
    ).all()
    with transaction(db):
        record_event(db, "data_exported", now=now, client=client, user_id=user.id)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now,
        "profile": {**profile._asdict(), "email_verified": bool(profile.email_verified)},
        "sessions": [row._asdict() for row in sessions],
        "events": [row._asdict() for row in events],
    }
