"""Devices: list a user's active sessions, revoke one of them, list recent security events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import transaction
from ..errors import NotFound
from ..models import AuthSession, SecurityEvent
from ..queries import session_live
from ..runtime import Runtime
from .common import ClientInfo
from .events import record_event
from .tokens import end_session

EVENTS_DEFAULT_LIMIT = 50
EVENTS_MAX_LIMIT = 100


@dataclass(frozen=True)
class ActiveSession:
    """One device as its owner sees it; `current` marks the caller's own session."""

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None
    current: bool


def list_sessions(
    db: Session, rt: Runtime, user_id: uuid.UUID, current_session_id: uuid.UUID
) -> list[ActiveSession]:
    """The user's live sessions, newest first."""
    rows = db.execute(
        select(
            AuthSession.id,
            AuthSession.created_at,
            AuthSession.last_used_at,
            AuthSession.expires_at,
            AuthSession.user_agent,
            AuthSession.ip_address,
        )
        .where(AuthSession.user_id == user_id, session_live(rt.clock()))
        .order_by(AuthSession.created_at.desc(), AuthSession.id)
    ).all()
    return [ActiveSession(**row._asdict(), current=row.id == current_session_id) for row in rows]


def revoke_own_session(
    db: Session,
    rt: Runtime,
    user_id: uuid.UUID,
    session_id: uuid.UUID | None,
    caller_session_id: uuid.UUID,
    client: ClientInfo,
) -> None:
    """End one of the user's live sessions (the caller's own included).

    Anyone else's session, an ended one and one that never existed all raise the same
    NotFound, so the answer reveals nothing about other users' sessions.
    """
    if session_id is None:
        raise NotFound("no such session")
    now = rt.clock()
    with transaction(db):
        # Only a live session of the caller's own can end here; anything else is NotFound.
        owned = db.scalar(
            select(AuthSession.id).where(
                AuthSession.id == session_id, AuthSession.user_id == user_id, session_live(now)
            )
        )
        # The ending UPDATE's row count decides between two racing deletes of one session.
        if owned is None or not end_session(db, session_id, now, "session_revoked"):
            raise NotFound("no such session")
        record_event(
            db,
            "session_revoked",
            now=now,
            client=client,
            user_id=user_id,
            session_id=session_id,
            details={"by_session_id": str(caller_session_id)},
        )


def list_events(
    db: Session, user_id: uuid.UUID, limit: int = EVENTS_DEFAULT_LIMIT
) -> list[SecurityEvent]:
    """The user's most recent security events, newest first (at most EVENTS_MAX_LIMIT)."""
    limit = max(1, min(limit, EVENTS_MAX_LIMIT))
    return list(
        db.scalars(
            select(SecurityEvent)
            .where(SecurityEvent.user_id == user_id)
            .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc())
            .limit(limit)
        )
    )
