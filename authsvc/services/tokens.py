"""Sessions and their refresh-token chains: start, rotate (atomically), revoke; bearer checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import queries as q
from ..db import transaction
from ..errors import (
    AccountDisabled,
    EmailNotVerified,
    InvalidCredentials,
    InvalidToken,
    RefreshTokenReused,
)
from ..runtime import Runtime
from ..security.jwt import AccessClaims
from ..security.tokens import (
    MAX_TOKEN_LENGTH,
    hash_token,
    new_token,
    open_successor,
    seal_successor,
)
from .common import ClientInfo, TokenPair, UserInfo, parse_uuid
from .events import record_event
from .notices import notify


def _seconds_left(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))


def token_pair(
    rt: Runtime,
    user: UserInfo,
    session_id: uuid.UUID,
    refresh: str,
    refresh_exp: datetime,
    now: datetime,
) -> TokenPair:
    """The response of a login, refresh or reissue: a new access token beside `refresh`."""
    access, expires_in = rt.keys.issue_access_token(
        str(user.id), str(session_id), now, email_verified=user.email_verified
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=expires_in,
        refresh_expires_in=_seconds_left(refresh_exp, now),
        user=user,
        session_id=session_id,
    )


def _times(rt: Runtime, now: datetime) -> dict[str, datetime]:
    s = rt.settings
    return {
        "now": now,
        "renewed": now + timedelta(seconds=s.REFRESH_TOKEN_TTL),
        "absolute": now + timedelta(seconds=s.SESSION_MAX_LIFETIME),
    }


def _client(client: ClientInfo) -> dict[str, Any]:
    return {"client_ip": client.ip_address, "client_agent": client.user_agent}


def _add_token(
    db: Session,
    raw: str,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    expires_at: datetime,
    client: ClientInfo,
    now: datetime,
) -> str:
    """Add `raw` as the live link of the session's chain; returns it."""
    db.execute(
        q.INSERT_TOKEN,
        {
            "uid": user_id,
            "sid": session_id,
            "link_hash": hash_token(raw),
            "link_expires": expires_at,
            "now": now,
            **_client(client),
        },
    )
    return raw


def start_session(
    db: Session,
    rt: Runtime,
    user: UserInfo,
    verified_hash: str,
    client: ClientInfo,
    now: datetime,
) -> TokenPair:
    """Within the caller's transaction: a new session with its first refresh token, written
    only while the account's password hash is still `verified_hash` (else
    InvalidCredentials, and the caller's transaction rolls back)."""
    session_id = uuid.uuid4()
    expires_at = db.execute(
        q.START_SESSION,
        {
            "sid": session_id,
            "uid": user.id,
            "verified_hash": verified_hash,
            **_times(rt, now),
            **_client(client),
        },
    ).scalar()
    if expires_at is None:  # the password was reset or changed since it was checked
        raise InvalidCredentials("invalid email or password")
    raw = _add_token(db, new_token(), user.id, session_id, expires_at, client, now)
    return token_pair(rt, user, session_id, raw, expires_at, now)


def _user(rt: Runtime, row: Any, user_id: uuid.UUID) -> UserInfo:
    """The user of a refresh (RENEW_SESSION, SPENDABLE_SUCCESSOR); EmailNotVerified (the
    transaction rolls back, the token stays unspent) while REQUIRE_VERIFIED_EMAIL says no."""
    verified = bool(row.email_verified)
    if rt.settings.REQUIRE_VERIFIED_EMAIL and not verified:
        raise EmailNotVerified("verify your email address first (see the mail we sent)")
    return UserInfo(user_id, row.email, row.name, row.created_at, verified)


def rotate_refresh_token(db: Session, rt: Runtime, raw: str, client: ClientInfo) -> TokenPair:
    """Spend `raw` and return its successor. Exactly one request can spend a token; the
    others (retries within the grace window) get the same successor back, and anything
    else presenting a spent token revokes the whole session."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise InvalidToken("invalid refresh token")
    now = rt.clock()
    presented_hash = hash_token(raw)
    successor = new_token()
    params = {
        "presented_hash": presented_hash,
        "sealed": seal_successor(raw, successor),
        "link_hash": hash_token(successor),
        **_times(rt, now),
        **_client(client),
    }
    with transaction(db):
        spent, renewed = _rotate(db, params)
        if spent is None:
            return _retry_or_reject(db, rt, raw, presented_hash, client, now)
        if renewed is None:  # ended between spending and renewing
            raise InvalidToken("refresh token revoked")
        user = _user(rt, renewed, spent.user_id)
    return token_pair(rt, user, spent.session_id, successor, renewed.expires_at, now)


def _rotate(db: Session, params: dict[str, Any]) -> tuple[Any, Any]:
    """Spend the presented token, renew its session, add the successor: the token's row (or
    None: not spendable, nothing written) and the renewed session's (or None: it ended).
    One statement on PostgreSQL (queries.ROTATE), the same three in turn on SQLite."""
    if db.get_bind().dialect.name == "postgresql":
        row = db.execute(q.ROTATE, params).first()
        return row, (row if row is not None and row.expires_at is not None else None)
    spent = db.execute(q.SPEND_TOKEN, params).first()
    if spent is None:
        return None, None
    at = {"sid": spent.session_id, "uid": spent.user_id}
    renewed = db.execute(q.RENEW_SESSION, {**params, **at}).first()
    if renewed is not None:
        db.execute(q.INSERT_TOKEN, {**params, **at, "link_expires": renewed.expires_at})
    return spent, renewed


def _retry_or_reject(
    db: Session, rt: Runtime, raw: str, presented_hash: str, client: ClientInfo, now: datetime
) -> TokenPair:
    """The presented token could not be spent: unknown, dead, a retry, or reuse."""
    row = db.execute(q.PRESENTED_TOKEN, {"presented_hash": presented_hash, "now": now}).first()
    if row is not None and not row.account_active:
        raise AccountDisabled("this account has been disabled")
    if row is None or not row.session_live or row.revoked or not row.unexpired:
        raise InvalidToken("invalid refresh token")
    if row.spent_at is None:  # spendable, yet not spent: cannot happen under the lock
        raise InvalidToken("invalid refresh token")

    s = rt.settings
    grace = timedelta(seconds=s.REFRESH_REUSE_GRACE)
    successor = open_successor(raw, row.successor_sealed) if row.successor_sealed else None
    live = None
    if successor is not None and now - row.spent_at <= grace:
        live = db.execute(
            q.SPENDABLE_SUCCESSOR, {"successor_hash": hash_token(successor), "now": now}
        ).first()
    if live is not None:
        # The successor's row holds the client that rotated the token: a retry from anyone
        # else is a replay of a copied token, recorded (and, bound, treated as reuse).
        elsewhere = (live.ip_address, live.user_agent) != (client.ip_address, client.user_agent)
        if elsewhere:
            record_event(
                db,
                "refresh_token_replayed",
                now=now,
                client=client,
                user_id=row.user_id,
                session_id=row.session_id,
            )
        if not (elsewhere and s.REFRESH_REUSE_GRACE_BIND):
            user = _user(rt, live, row.user_id)
            return token_pair(rt, user, row.session_id, successor, live.expires_at, now)

    # A spent token outside the grace window (or whose successor moved on): someone holds
    # a copy they should not. The session ends; the error keeps that effect.
    end_session(db, row.session_id, now, "refresh_token_reused")
    record_event(
        db,
        "refresh_token_reused",
        now=now,
        client=client,
        user_id=row.user_id,
        session_id=row.session_id,
    )
    owner = db.scalar(select(q.users.c.email).where(q.users.c.id == row.user_id))
    if owner is not None:
        notify(db, s, "NOTIFY_REFRESH_TOKEN_REUSE", "refresh_token_reused", to=owner, now=now)
    raise RefreshTokenReused("refresh token was already used; the session has been revoked")


def end_session(db: Session, session_id: uuid.UUID, now: datetime, reason: str) -> bool:
    """Within the caller's transaction: end one session; whether it was live."""
    db.execute(q.REVOKE_SESSION_TOKENS, {"sid": session_id, "now": now})
    ended = db.execute(q.END_SESSION, {"sid": session_id, "now": now, "reason": reason})
    return ended.rowcount > 0


def end_all_sessions(
    db: Session,
    user_id: uuid.UUID,
    now: datetime,
    reason: str,
    *,
    keep_session_id: uuid.UUID | None = None,
) -> int:
    """Within the caller's transaction: end every session of the user (but one, and that one
    keeps its tokens too); how many were live."""
    params = {"uid": user_id, "keep": keep_session_id or q.NIL_SESSION, "now": now}
    db.execute(q.REVOKE_USER_TOKENS, params)
    return db.execute(q.END_USER_SESSIONS, {**params, "reason": reason}).rowcount


def logout(db: Session, rt: Runtime, raw: str, client: ClientInfo) -> None:
    """End the session that `raw` belongs to. Unknown tokens are silently ignored."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return
    now = rt.clock()
    with transaction(db):
        row = db.execute(q.PRESENTED_TOKEN, {"presented_hash": hash_token(raw), "now": now}).first()
        if row is not None and end_session(db, row.session_id, now, "logout"):
            record_event(
                db, "logout", now=now, client=client, user_id=row.user_id, session_id=row.session_id
            )


def logout_all(
    db: Session, rt: Runtime, user_id: uuid.UUID, session_id: uuid.UUID, client: ClientInfo
) -> int:
    """End every session of the user, the caller's included; how many were live."""
    now = rt.clock()
    with transaction(db):
        count = end_all_sessions(db, user_id, now, "logout_all")
        record_event(
            db,
            "logout_all",
            now=now,
            client=client,
            user_id=user_id,
            session_id=session_id,
            details={"revoked_sessions": count},
        )
    return count


def reissue_session_ending_others(
    db: Session,
    rt: Runtime,
    user: UserInfo,
    session_id: uuid.UUID,
    client: ClientInfo,
    now: datetime,
    reason: str,
) -> tuple[TokenPair, int]:
    """Within the caller's transaction: end every other session of the user and give this
    one a new refresh-token chain (its old tokens revoked, the session kept).

    Returns the new pair and how many other sessions ended; InvalidToken if this session
    has ended meanwhile."""
    params = {"uid": user.id, "keep": q.NIL_SESSION, "sid": session_id, "now": now}
    db.execute(q.REVOKE_USER_TOKENS, params)
    # READ COMMITTED: a rotation of this session that committed while the statement above
    # waited for its row added a successor that statement cannot see; a new statement does.
    db.execute(q.REVOKE_SESSION_TOKENS, params)
    ended = end_all_sessions(db, user.id, now, reason, keep_session_id=session_id)
    renewed = db.execute(
        q.RENEW_SESSION, {"sid": session_id, **_times(rt, now), **_client(client)}
    ).first()
    if renewed is None:
        raise InvalidToken("session has been revoked")
    raw = _add_token(db, new_token(), user.id, session_id, renewed.expires_at, client, now)
    return token_pair(rt, user, session_id, raw, renewed.expires_at, now), ended


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid access token whose session is live."""

    user: UserInfo
    session_id: uuid.UUID
    claims: AccessClaims


def authenticate_access_token(db: Session, rt: Runtime, token: str) -> Principal:
    """Verify the token and that its session is live: one indexed lookup, user included."""
    now = rt.clock()
    claims = rt.keys.verify_access_token(token, now)
    user_id, session_id = parse_uuid(claims.sub), parse_uuid(claims.sid)
    if user_id is None or session_id is None:
        raise InvalidToken("invalid access token")
    row = db.execute(q.PRINCIPAL, {"sid": session_id, "uid": user_id, "now": now}).first()
    if row is None:
        raise InvalidToken("session has ended")
    return Principal(user=UserInfo(*row), session_id=session_id, claims=claims)
