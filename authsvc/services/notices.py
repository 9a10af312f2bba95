"""Mail that tells account holders what happened: links into the front end, and the
security notices (each switchable by a NOTIFY_* setting), sent only once the change commits."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from .. import mail_templates
from ..config import Settings
from ..db import after_commit


def frontend_link(settings: Settings, path: str, token: str | None = None) -> str:
    """FRONTEND_URL + path (+ ?token=…): from configuration, never from a request's Host."""
    query = f"?{urlencode({'token': token})}" if token is not None else ""
    return f"{settings.FRONTEND_URL.rstrip('/')}{path}{query}"


def when(now: datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M UTC")


def mail_after_commit(
    db: Session, settings: Settings, name: str, *, to: str, now: datetime, **context: Any
) -> None:
    """Within the caller's transaction: send mail `name` once the transaction commits."""
    context.setdefault("forgot_link", frontend_link(settings, "/forgot-password"))
    after_commit(
        db, functools.partial(mail_templates.send, settings, name, to=to, now=now, **context)
    )


def notify(
    db: Session,
    settings: Settings,
    setting: str,
    name: str,
    *,
    to: str,
    now: datetime,
    **context: Any,
) -> None:
    """A security notice, unless its NOTIFY_* `setting` is off; sent after the commit."""
    if getattr(settings, setting):
        mail_after_commit(db, settings, name, to=to, now=now, when=when(now), **context)
