"""Security events: stored for the user to see and logged as one JSON line each."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..models import SecurityEvent
from .common import ClientInfo

EVENT_TYPES = frozenset(
    {
        "login_succeeded",
        "login_failed",
        "refresh_token_reused",
        "refresh_token_replayed",
        "logout",
        "logout_all",
        "session_revoked",
        "password_reset_requested",
        "password_reset",
        "password_changed",
        # Account lifecycle (docs/accounts.md); admin actions carry {"by_client": id} or
        # {"by": "cli"} in details.
        "email_verified",
        "email_change_requested",
        "email_changed",
        "account_disabled",
        "account_enabled",
        "account_deleted",
        "sessions_revoked_by_admin",
        "login_unlocked",
        "data_exported",
    }
)

log = logging.getLogger("authsvc.security")


def record_event(
    db: Session,
    event_type: str,
    *,
    now: datetime,
    client: ClientInfo,
    user_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add the event to the caller's transaction and log it. Never pass a secret in details."""
    check_event_type(event_type)
    db.add(
        SecurityEvent(
            type=event_type,
            user_id=user_id,
            session_id=session_id,
            created_at=now,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
            details=details,
        )
    )
    log_event(
        event_type, now=now, client=client, user_id=user_id, session_id=session_id, details=details
    )


def check_event_type(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown security event {event_type!r}")


def log_event(
    event_type: str,
    *,
    now: datetime,
    client: ClientInfo,
    user_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    details: dict[str, Any] | None,
) -> None:
    """The event's JSON log line."""
    log.info(
        json.dumps(
            {
                "event": event_type,
                "user_id": str(user_id) if user_id else None,
                "session_id": str(session_id) if session_id else None,
                "ip": client.ip_address,
                "user_agent": client.user_agent,
                "at": now.isoformat(),
                **({"details": details} if details else {}),
            },
            separators=(",", ":"),
        )
    )
