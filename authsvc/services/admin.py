"""Operators' view of accounts (the admin API and `flask users …`): find, list, show; and
the operator actions, each recorded as a security event naming who acted (`by`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import queries as q
from ..db import transaction
from ..errors import NotFound
from ..models import AuthSession, User
from ..runtime import Runtime
from .common import ClientInfo, parse_uuid
from .events import record_event
from .lifecycle import delete_account, end_every_session, set_disabled

PAGE_MAX = 100


@dataclass(frozen=True)
class Account:
    """An account as operators see it: never a hash, never a secret."""

    id: uuid.UUID
    email: str
    name: str | None
    created_at: datetime
    password_changed_at: datetime
    email_verified: bool
    email_verified_at: datetime | None
    disabled: bool
    disabled_at: datetime | None
    active_sessions: int


def _accounts(now: datetime, *where: Any) -> Any:
    live = (
        select(func.count())
        .select_from(AuthSession)
        .where(AuthSession.user_id == User.id, q.session_live(now))
        .scalar_subquery()
    )
    return select(
        *q.profile_fields(),
        (~q.account_active()).label("disabled"),
        User.disabled_at,
        live.label("active_sessions"),
    ).where(*where)


def _account(row: Any) -> Account:
    values = row._asdict()
    values["email_verified"] = bool(values["email_verified"])
    values["disabled"] = bool(values["disabled"])
    return Account(**values)


def get_account(db: Session, rt: Runtime, user_id: uuid.UUID | None) -> Account:
    row = db.execute(_accounts(rt.clock(), User.id == user_id)).first() if user_id else None
    if row is None:
        raise NotFound("no such account")
    return _account(row)


def find_account(db: Session, rt: Runtime, id_or_email: str) -> Account:
    """By id, or by email (any spelling that normalises to it)."""
    user_id = parse_uuid(id_or_email)
    if user_id is None:
        email = id_or_email.strip().lower()
        user_id = db.scalar(select(User.id).where(User.email == email))
    return get_account(db, rt, user_id)


def list_accounts(
    db: Session, rt: Runtime, email: str | None = None, page: int = 1, per_page: int = 50
) -> tuple[list[Account], int]:
    """Accounts whose email contains `email` (case-insensitively), oldest first; one page
    and the total."""
    where = []
    if email:
        where.append(User.email.contains(email.strip().lower(), autoescape=True))
    per_page = max(1, min(per_page, PAGE_MAX))
    total = db.scalar(select(func.count()).select_from(User).where(*where)) or 0
    rows = db.execute(
        _accounts(rt.clock(), *where)
        .order_by(User.created_at, User.id)
        .limit(per_page)
        .offset((max(1, page) - 1) * per_page)
    ).all()
    return [_account(row) for row in rows], total


def disable(
    db: Session, rt: Runtime, user_id: uuid.UUID | None, by: dict, client: ClientInfo
) -> Account:
    """Disable the account and end every session at once (idempotent)."""
    set_disabled(db, rt, user_id, True, by, client)
    return get_account(db, rt, user_id)


def enable(
    db: Session, rt: Runtime, user_id: uuid.UUID | None, by: dict, client: ClientInfo
) -> Account:
    set_disabled(db, rt, user_id, False, by, client)
    return get_account(db, rt, user_id)


def delete(
    db: Session, rt: Runtime, user_id: uuid.UUID | None, by: dict, client: ClientInfo
) -> None:
    delete_account(db, rt, user_id, by, client)


def logout(
    db: Session, rt: Runtime, user_id: uuid.UUID | None, by: dict, client: ClientInfo
) -> int:
    """End every session of the account; how many were live."""
    return end_every_session(db, rt, user_id, by, client)


class Unlockable(Protocol):
    def unlock(self, email: str) -> None: ...


def unlock(
    db: Session,
    rt: Runtime,
    user_id: uuid.UUID | None,
    throttle: Unlockable | None,
    by: dict,
    client: ClientInfo,
) -> None:
    """Forget the account's failed logins (the login throttle's delays)."""
    account = get_account(db, rt, user_id)
    if throttle is not None:
        throttle.unlock(account.email)
    with transaction(db):
        record_event(
            db, "login_unlocked", now=rt.clock(), client=client, user_id=account.id, details=by
        )
