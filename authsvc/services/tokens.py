"""Sessions and their refresh-token chains: issue, rotate (atomically), revoke; bearer checks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, case, insert, select, update
from sqlalchemy.orm import Session

from ..db import UTCDateTime, begin_write
from ..errors import InvalidToken, RefreshTokenReused
from ..models import AuthSession, RefreshToken, User
from ..runtime import Runtime
from ..security.jwt import AccessClaims
from ..security.tokens import (
    MAX_TOKEN_LENGTH,
    hash_token,
    new_token,
    open_successor,
    seal_successor,
)
from .common import ClientInfo, TokenPair, parse_uuid
from .events import record_event
from .fastpath import UserInfo, fast_path, token_pair

# Statements of the rarer write paths (a new chain for change-password and reset), built
# once; the hot paths (bearer lookup, rotation) are hand-written SQL in `fastpath`.
_INSERT_TOKEN = insert(RefreshToken)


_RENEWED = bindparam("renewed", type_=UTCDateTime())
_RENEW_SESSION = (
    update(AuthSession)
    .where(
        AuthSession.id == bindparam("b_session_id"),
        AuthSession.revoked_at.is_(None),
        AuthSession.absolute_expires_at > bindparam("now", type_=UTCDateTime()),
    )
    .values(
        last_used_at=bindparam("now", type_=UTCDateTime()),
        expires_at=case(
            (AuthSession.absolute_expires_at < _RENEWED, AuthSession.absolute_expires_at),
            else_=_RENEWED,
        ),
        ip_address=bindparam("b_ip_address"),
        user_agent=bindparam("b_user_agent"),
    )
    .returning(AuthSession.expires_at)
)


def _insert_refresh_token(
    db: Session,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    raw: str,
    expires_at: datetime,
    client: ClientInfo,
    now: datetime,
) -> None:
    db.connection().execute(
        _INSERT_TOKEN,
        {
            "user_id": user_id,
            "session_id": session_id,
            "token_hash": hash_token(raw),
            "created_at": now,
            "expires_at": expires_at,
            "last_used_at": now,
            "revoked": False,
            "user_agent": client.user_agent,
            "ip_address": client.ip_address,
        },
    )


def _renew_session(
    db: Session, rt: Runtime, session_id: uuid.UUID, client: ClientInfo, now: datetime
) -> datetime | None:
    """Mark the session used and push its expiry out by REFRESH_TOKEN_TTL, never past its
    absolute lifetime; the new expiry, or None if the session has ended."""
    return (
        db.connection()
        .execute(
            _RENEW_SESSION,
            {
                "b_session_id": session_id,
                "now": now,
                "renewed": now + timedelta(seconds=rt.settings.REFRESH_TOKEN_TTL),
                "b_ip_address": client.ip_address,
                "b_user_agent": client.user_agent,
            },
        )
        .scalar()
    )


def start_session(
    db: Session, rt: Runtime, user: User, client: ClientInfo, now: datetime
) -> TokenPair:
    """Add a new session with its first refresh token to the caller's transaction."""
    s = rt.settings
    absolute = now + timedelta(seconds=s.SESSION_MAX_LIFETIME)
    expires = min(now + timedelta(seconds=s.REFRESH_TOKEN_TTL), absolute)
    session = AuthSession(
        id=uuid.uuid4(),
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        expires_at=expires,
        absolute_expires_at=absolute,
        user_agent=client.user_agent,
        ip_address=client.ip_address,
    )
    raw = new_token()
    db.add(session)
    db.flush()  # the token row below references it
    _insert_refresh_token(db, user.id, session.id, raw, expires, client, now)
    return token_pair(rt, user, session.id, raw, expires, now)


def rotate_refresh_token(
    engine: Engine, open_session: Callable[[], Session], rt: Runtime, raw: str, client: ClientInfo
) -> TokenPair:
    """Spend `raw` and return its successor. Exactly one request can spend a token; the
    others (retries within the grace window) get the same successor back, and anything
    else presenting a spent token revokes the whole session.

    The rotation itself needs no ORM session; `open_session` gives one only for the rare
    paths (a retry, a reuse)."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise InvalidToken("invalid refresh token")
    now = rt.clock()
    token_hash = hash_token(raw)
    successor = new_token()
    # The conditional UPDATE is the arbiter: whether it matched says who spent the token.
    rotated = fast_path(engine).rotate(
        token_hash=token_hash,
        successor_hash=hash_token(successor),
        sealed=seal_successor(raw, successor),
        now=now,
        renewed=now + timedelta(seconds=rt.settings.REFRESH_TOKEN_TTL),
        ip_address=client.ip_address,
        user_agent=client.user_agent,
    )
    if rotated is None:
        db = open_session()
        begin_write(db)
        return _replay_or_reject(db, rt, raw, token_hash, client, now)
    if rotated.user is None or rotated.expires_at is None:
        # The session was revoked or reached its absolute lifetime; nothing was written.
        raise InvalidToken("refresh token revoked")
    return token_pair(rt, rotated.user, rotated.session_id, successor, rotated.expires_at, now)


def _replay_or_reject(
    db: Session, rt: Runtime, raw: str, token_hash: str, client: ClientInfo, now: datetime
) -> TokenPair:
    """The presented token could not be spent: unknown, dead, a retry, or reuse."""
    row = db.execute(
        select(
            RefreshToken.session_id,
            RefreshToken.user_id,
            RefreshToken.spent_at,
            RefreshToken.revoked,
            RefreshToken.expires_at,
            RefreshToken.successor_sealed,
            AuthSession.revoked_at.label("session_revoked_at"),
        )
        .join(AuthSession, AuthSession.id == RefreshToken.session_id)
        .where(RefreshToken.token_hash == token_hash)
    ).first()
    if (
        row is None
        or row.revoked
        or row.session_revoked_at is not None
        or row.spent_at is None  # not spendable yet unspent: it has expired
        or row.expires_at <= now
    ):
        db.rollback()
        raise InvalidToken("invalid refresh token")

    grace = timedelta(seconds=rt.settings.REFRESH_REUSE_GRACE)
    if now - row.spent_at <= grace and row.successor_sealed:
        successor = open_successor(raw, row.successor_sealed)
        live = (
            successor is not None
            and db.execute(
                select(RefreshToken.expires_at).where(
                    RefreshToken.token_hash == hash_token(successor),
                    RefreshToken.spent_at.is_(None),
                    RefreshToken.revoked.is_(False),
                    RefreshToken.expires_at > now,
                )
            ).first()
        )
        if live:
            user = db.get_one(User, row.user_id)
            db.commit()  # nothing written; ends the write transaction, keeps `user` loaded
            return token_pair(rt, user, row.session_id, successor, live.expires_at, now)

    # A spent token outside the grace window (or whose successor moved on): someone holds
    # a copy they should not. End the session before answering, so the error cannot undo it.
    _revoke_sessions(db, now, "refresh_token_reused", session_id=row.session_id)
    record_event(
        db,
        "refresh_token_reused",
        now=now,
        client=client,
        user_id=row.user_id,
        session_id=row.session_id,
    )
    db.commit()
    raise RefreshTokenReused("refresh token was already used; the session has been revoked")


def _revoke_sessions(
    db: Session,
    now: datetime,
    reason: str,
    *,
    session_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    keep_session_id: uuid.UUID | None = None,
) -> int:
    """Revoke one session, or every live session of a user (but `keep_session_id`).

    Tokens first, then sessions: the same lock order as rotation, so the two never
    deadlock on PostgreSQL. Returns how many active sessions were ended.
    """
    token_filter = (
        [RefreshToken.session_id == session_id]
        if session_id is not None
        else [RefreshToken.user_id == user_id]
    )
    session_filter = (
        [AuthSession.id == session_id]
        if session_id is not None
        else [AuthSession.user_id == user_id]
    )
    if keep_session_id is not None:
        token_filter.append(RefreshToken.session_id != keep_session_id)
        session_filter.append(AuthSession.id != keep_session_id)
    db.execute(
        update(RefreshToken)
        .where(*token_filter, RefreshToken.revoked.is_(False))
        .values(revoked=True, revoked_at=now)
    )
    result = db.execute(
        update(AuthSession)
        .where(*session_filter, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
        .returning(AuthSession.expires_at)
    )
    return sum(1 for (expires_at,) in result if expires_at > now)


def revoke_all_sessions(
    db: Session,
    user_id: uuid.UUID,
    now: datetime,
    reason: str,
    *,
    keep_session_id: uuid.UUID | None = None,
) -> int:
    """Within the caller's write transaction: end every session of the user (but one)."""
    return _revoke_sessions(db, now, reason, user_id=user_id, keep_session_id=keep_session_id)


def revoke_session(db: Session, session_id: uuid.UUID, now: datetime, reason: str) -> int:
    """Within the caller's write transaction: end one session; 1 if it was active."""
    return _revoke_sessions(db, now, reason, session_id=session_id)


def logout(db: Session, rt: Runtime, raw: str, client: ClientInfo) -> None:
    """End the session that `raw` belongs to. Unknown tokens are silently ignored."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return
    now = rt.clock()
    begin_write(db)
    row = db.execute(
        select(RefreshToken.session_id, RefreshToken.user_id).where(
            RefreshToken.token_hash == hash_token(raw)
        )
    ).first()
    if row is None:
        db.rollback()
        return
    if revoke_session(db, row.session_id, now, "logout"):
        record_event(
            db, "logout", now=now, client=client, user_id=row.user_id, session_id=row.session_id
        )
    db.commit()


def logout_all(
    db: Session, rt: Runtime, user_id: uuid.UUID, session_id: uuid.UUID, client: ClientInfo
) -> int:
    """End every session of the user, the caller's included; how many were active."""
    now = rt.clock()
    begin_write(db)
    count = revoke_all_sessions(db, user_id, now, "logout_all")
    record_event(
        db,
        "logout_all",
        now=now,
        client=client,
        user_id=user_id,
        session_id=session_id,
        details={"revoked_sessions": count},
    )
    db.commit()
    return count


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid access token whose session is still live."""

    user: UserInfo
    session_id: uuid.UUID
    claims: AccessClaims


def authenticate_access_token(engine: Engine, rt: Runtime, token: str) -> Principal:
    """Verify the token and that its session is live: one indexed lookup, user included."""
    claims = rt.keys.verify_access_token(token, rt.clock())
    user_id, session_id = parse_uuid(claims.sub), parse_uuid(claims.sid)
    if user_id is None or session_id is None:
        raise InvalidToken("invalid access token")
    user = fast_path(engine).principal(session_id, user_id)
    if user is None:
        raise InvalidToken("session has been revoked")
    return Principal(user=user, session_id=session_id, claims=claims)


def reissue_session_ending_others(
    db: Session,
    rt: Runtime,
    user: User | UserInfo,
    session_id: uuid.UUID,
    client: ClientInfo,
    now: datetime,
    reason: str,
) -> tuple[TokenPair, int]:
    """Within the caller's write transaction: end every other session of the user and give
    this one a new refresh-token chain (every old token of it revoked, the session kept).

    Returns the new pair and how many other active sessions ended. InvalidToken if this
    session has ended meanwhile (the caller rolls back). One UPDATE over all the user's
    tokens first, then sessions: the lock order of logout-all and rotation (no deadlock).
    """
    revoke = (
        update(RefreshToken)
        .where(RefreshToken.revoked.is_(False))
        .values(revoked=True, revoked_at=now)
    )
    db.execute(revoke.where(RefreshToken.user_id == user.id))
    # READ COMMITTED: a rotation of this session that committed while the statement above
    # waited for its row added a successor that statement cannot see; a new statement does.
    db.execute(revoke.where(RefreshToken.session_id == session_id))
    ended = _revoke_sessions(db, now, reason, user_id=user.id, keep_session_id=session_id)
    expires_at = _renew_session(db, rt, session_id, client, now)
    if expires_at is None:
        raise InvalidToken("session has been revoked")
    raw = new_token()
    _insert_refresh_token(db, user.id, session_id, raw, expires_at, client, now)
    return token_pair(rt, user, session_id, raw, expires_at, now), ended
