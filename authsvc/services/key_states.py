"""Each signing key's state (pending, active, retired, expired, revoked) from its timestamps
and the clock; see services/keys.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..config import Settings
from ..models import SigningKeyRecord


@dataclass(frozen=True)
class KeyState:
    kid: str
    alg: str
    state: str
    created_at: datetime
    activates_at: datetime
    published_until: datetime | None
    development: bool


def key_states(
    records: list[SigningKeyRecord], settings: Settings, now: datetime
) -> list[KeyState]:
    """Each key's state at `now` (newest activation first)."""
    retention = timedelta(seconds=settings.ACCESS_TOKEN_TTL + settings.JWT_LEEWAY)
    usable = [
        r
        for r in records
        if r.revoked_at is None and not (settings.is_production and r.development)
    ]
    usable.sort(key=lambda r: (r.activates_at, r.created_at))
    active = [r for r in usable if r.activates_at <= now]
    signer = active[-1] if active else None
    states: list[KeyState] = []
    for record in records:
        until = None
        if record.revoked_at is not None:
            state = "revoked"
        elif record not in usable:
            state = "refused (development key in production)"
        elif record.activates_at > now:
            state = "pending"
        elif record is signer:
            state = "active"
        else:
            # Retired when the next key in activation order took over.
            successor = usable[usable.index(record) + 1]
            until = successor.activates_at + retention
            state = "retired" if now < until else "expired"
        states.append(
            KeyState(
                kid=record.kid,
                alg=record.alg,
                state=state,
                created_at=record.created_at,
                activates_at=record.activates_at,
                published_until=until,
                development=record.development,
            )
        )
    states.sort(key=lambda s: s.activates_at, reverse=True)
    return states
