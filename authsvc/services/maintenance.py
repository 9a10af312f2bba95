"""Bounded storage: purge expired and revoked rows in small batches, each its own transaction.

What is kept: every token of a live session that has not expired, spent ones included —
reuse detection needs them (presenting one revokes the session). Once a token has expired
it is refused as `invalid_token` whether its row exists or not, so deleting it never lets
a spent token work again: an unknown hash matches nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from ..db import transaction
from ..models import AuthSession, EmailToken, PasswordResetToken, RefreshToken, SecurityEvent
from ..runtime import Runtime

DEFAULT_RETENTION = timedelta(days=7)
DEFAULT_EVENTS_RETENTION = timedelta(days=90)
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000  # also bounds the bound-parameter list of one statement

_NO_SYNC = {"synchronize_session": False}


@dataclass
class PurgeReport:
    """Rows deleted (or, in a dry run, that would be) per table, and the cut-off times."""

    cutoff: datetime
    events_cutoff: datetime
    dry_run: bool
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "refresh_tokens",
                "sessions",
                "password_reset_tokens",
                "email_tokens",
                "security_events",
            ),
            0,
        )
    )
    batches: int = 0


def _expired_tokens(cutoff: datetime) -> ColumnElement[bool]:
    return RefreshToken.expires_at < cutoff


def _revoked_tokens(cutoff: datetime) -> ColumnElement[bool]:
    # Unexpired yet revoked tokens outside an ended session: a password change keeps the
    # session but revokes its old chain. Rare, and revoked_at has no index: last pass.
    return and_(RefreshToken.revoked.is_(True), RefreshToken.revoked_at < cutoff)


def _ended_sessions(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    # Two conditions, purged one after the other: revoked ones through the revoked_at index;
    # expired ones by a walk in primary-key order (expires_at has no index: every rotation
    # moves it, and an index on it would stop PostgreSQL from updating sessions in place).
    return AuthSession.revoked_at < cutoff, AuthSession.expires_at < cutoff


def _dead_reset_tokens(cutoff: datetime) -> ColumnElement[bool]:
    return or_(PasswordResetToken.expires_at < cutoff, PasswordResetToken.used_at < cutoff)


def _dead_email_tokens(cutoff: datetime) -> ColumnElement[bool]:
    return or_(EmailToken.expires_at < cutoff, EmailToken.used_at < cutoff)


def _old_events(events_cutoff: datetime) -> ColumnElement[bool]:
    return SecurityEvent.created_at < events_cutoff


def purge(
    db: Session,
    rt: Runtime,
    *,
    retention: timedelta = DEFAULT_RETENTION,
    events_retention: timedelta = DEFAULT_EVENTS_RETENTION,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
) -> PurgeReport:
    """Delete what has been dead for longer than `retention` (events: `events_retention`).

    - refresh tokens that expired, or were revoked, before the cut-off;
    - sessions revoked or ended before the cut-off, with whatever tokens they still have;
    - password reset and email tokens used or expired before the cut-off;
    - security events older than their own cut-off.

    Each batch deletes at most `batch_size` rows and commits, so no lock is held for long
    and rotation, logins and logouts go on meanwhile. A dry run counts the same rows.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}")
    if retention < timedelta(0) or events_retention < timedelta(0):
        raise ValueError("retention must not be negative")
    now = rt.clock()
    report = PurgeReport(
        cutoff=now - retention, events_cutoff=now - events_retention, dry_run=dry_run
    )
    if dry_run:
        _count(db, report)
        return report

    cutoff = report.cutoff
    # Expired tokens first: afterwards an ended session has at most the unexpired tokens
    # of a revoked chain left, so deleting sessions moves little.
    report.counts["refresh_tokens"] += _delete_by_id(
        db, report, RefreshToken, _expired_tokens(cutoff), batch_size
    )
    revoked, expired = _ended_sessions(cutoff)
    _delete_sessions(db, report, revoked, batch_size)
    _delete_sessions(db, report, expired, batch_size, walk=True)
    report.counts["refresh_tokens"] += _delete_by_id(
        db, report, RefreshToken, _revoked_tokens(cutoff), batch_size
    )
    report.counts["password_reset_tokens"] += _delete_by_id(
        db, report, PasswordResetToken, _dead_reset_tokens(cutoff), batch_size
    )
    report.counts["email_tokens"] += _delete_by_id(
        db, report, EmailToken, _dead_email_tokens(cutoff), batch_size
    )
    report.counts["security_events"] += _delete_by_id(
        db, report, SecurityEvent, _old_events(report.events_cutoff), batch_size
    )
    return report


def _count(db: Session, report: PurgeReport) -> None:
    cutoff = report.cutoff

    def count(query: Select) -> int:
        return db.scalar(select(func.count()).select_from(query.subquery())) or 0

    report.counts["refresh_tokens"] = count(
        select(RefreshToken.id)
        .join(AuthSession, AuthSession.id == RefreshToken.session_id)
        .where(
            or_(
                _expired_tokens(cutoff),
                _revoked_tokens(cutoff),
                *_ended_sessions(cutoff),
            )
        )
    )
    report.counts["sessions"] = count(select(AuthSession.id).where(or_(*_ended_sessions(cutoff))))
    report.counts["password_reset_tokens"] = count(
        select(PasswordResetToken.id).where(_dead_reset_tokens(cutoff))
    )
    report.counts["email_tokens"] = count(select(EmailToken.id).where(_dead_email_tokens(cutoff)))
    report.counts["security_events"] = count(
        select(SecurityEvent.id).where(_old_events(report.events_cutoff))
    )


def _delete_by_id(
    db: Session, report: PurgeReport, model: type, condition: ColumnElement[bool], batch_size: int
) -> int:
    """Delete the rows `condition` matches by id, `batch_size` at a time, each batch its own
    committed transaction."""
    total = 0
    while True:
        batch = select(model.id).where(condition).limit(batch_size).scalar_subquery()
        with transaction(db):
            deleted = db.execute(
                delete(model).where(model.id.in_(batch)), execution_options=_NO_SYNC
            ).rowcount
        report.batches += 1
        total += deleted
        if deleted < batch_size:
            return total


def _delete_sessions(
    db: Session,
    report: PurgeReport,
    condition: ColumnElement[bool],
    batch_size: int,
    *,
    walk: bool = False,
) -> None:
    """Ended sessions, `batch_size` at a time: their remaining tokens (in bounded batches),
    then the sessions themselves. With `walk`, for a condition no index serves: each batch
    goes on in primary-key order from where the last one stopped, so a whole purge reads
    each session once (the primary key's index), never the table once per batch."""
    after: uuid.UUID | None = None
    while True:
        query = select(AuthSession.id).where(condition).limit(batch_size)
        if walk:
            query = query.order_by(AuthSession.id)
            if after is not None:
                query = query.where(AuthSession.id > after)
        ids = list(db.scalars(query))
        if not ids:
            return
        after = ids[-1]
        report.counts["refresh_tokens"] += _delete_by_id(
            db, report, RefreshToken, RefreshToken.session_id.in_(ids), batch_size
        )
        report.counts["sessions"] += _delete_ids(db, report, AuthSession, ids, condition)
        if len(ids) < batch_size:
            return


def _delete_ids(
    db: Session,
    report: PurgeReport,
    model: type,
    ids: Iterable[uuid.UUID],
    condition: ColumnElement[bool],
) -> int:
    with transaction(db):
        # The condition again: an id read outside this transaction proves nothing by now.
        deleted = db.execute(
            delete(model).where(model.id.in_(list(ids)), condition), execution_options=_NO_SYNC
        ).rowcount
    report.batches += 1
    return deleted
