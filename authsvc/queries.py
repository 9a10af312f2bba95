"""The rules, each once, as SQLAlchemy Core: when a refresh token is spendable, when a session
is live, how a session's expiry is capped; and the statements every use case builds on them.

Statements are built once, with named parameters (never a column's name: those are
SQLAlchemy's own in INSERT and UPDATE), so that each compiles once per dialect (SQLAlchemy's
compiled cache) and psycopg prepares it on the server after a few runs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, false, insert, select, true, update

from .db import UTCDateTime
from .models import AuthSession, RefreshToken, User

# Core tables: statements on them run as plain Core (no ORM bookkeeping) in a Session too.
users = User.__table__
sessions = AuthSession.__table__
tokens = RefreshToken.__table__

NOW = bindparam("now", type_=UTCDateTime())
RENEWED = bindparam("renewed", type_=UTCDateTime())  # now + REFRESH_TOKEN_TTL
ABSOLUTE = bindparam("absolute", type_=UTCDateTime())  # now + SESSION_MAX_LIFETIME
SID = bindparam("sid", type_=sessions.c.id.type)
UID = bindparam("uid", type_=users.c.id.type)
CLIENT_IP = bindparam("client_ip", type_=sessions.c.ip_address.type)
CLIENT_AGENT = bindparam("client_agent", type_=sessions.c.user_agent.type)


# -- The rules ------------------------------------------------------------------------------


def token_spendable(now: Any = NOW) -> ColumnElement[bool]:
    """A refresh token can be exchanged: never spent, not revoked, not expired."""
    return and_(
        tokens.c.spent_at.is_(None),
        tokens.c.revoked.is_(False),
        tokens.c.expires_at > now,
    )


def session_live(now: Any = NOW) -> ColumnElement[bool]:
    """A session still authenticates its access tokens and refreshes: not revoked, not idle
    past its refresh token's expiry, not past its absolute lifetime."""
    return and_(
        sessions.c.revoked_at.is_(None),
        sessions.c.expires_at > now,
        sessions.c.absolute_expires_at > now,
    )


def account_active() -> ColumnElement[bool]:
    """An account may log in, refresh and use its access tokens: an operator has not
    disabled it."""
    return users.c.disabled_at.is_(None)


def email_verified() -> ColumnElement[bool]:
    """An account's address is verified: a mail sent to it came back (a verification link,
    a password reset, a confirmed change of address)."""
    return users.c.email_verified_at.is_not(None)


def capped_expiry(
    renewed: Any = RENEWED, absolute: Any = sessions.c.absolute_expires_at
) -> ColumnElement[datetime]:
    """A session's expiry (and its live refresh token's): `renewed`, never past `absolute`."""
    return case((absolute < renewed, absolute), else_=renewed)


# -- Statements -----------------------------------------------------------------------------


def user_fields() -> list[Any]:
    """The user as responses show it (UserInfo's fields, in order)."""
    return [
        users.c.id,
        users.c.email,
        users.c.name,
        users.c.created_at,
        email_verified().label("email_verified"),
    ]


def profile_fields() -> list[Any]:
    """An account's profile, as its export and the admin surface show it."""
    return [
        users.c.id,
        users.c.email,
        users.c.name,
        users.c.created_at,
        users.c.password_changed_at,
        email_verified().label("email_verified"),
        users.c.email_verified_at,
    ]


def _user_columns(user_id: Any) -> list[Any]:
    """user_fields() but the id, for the user that `user_id` (a column) names."""
    return [
        select(field).where(users.c.id == user_id).scalar_subquery().label(field.name)
        for field in user_fields()[1:]
    ]


# Who a live session's access token speaks for (the bearer guard, introspection).
PRINCIPAL = (
    select(*user_fields())
    .join(sessions, sessions.c.user_id == users.c.id)
    .where(sessions.c.id == SID, sessions.c.user_id == UID, session_live(), account_active())
)

# A login's account, by its normalised email.
CREDENTIALS = select(*user_fields(), users.c.password_hash, account_active().label("active")).where(
    users.c.email == bindparam("email")
)

# Replace a password hash only while it is still the one the caller verified: a reset or
# change that committed meanwhile wins (no row).
REPLACE_PASSWORD_HASH = (
    update(users)
    .where(users.c.id == UID, users.c.password_hash == bindparam("verified_hash"))
    .values(password_hash=bindparam("new_hash"), password_changed_at=NOW)
    .returning(users.c.id)
)

# A new session, written only while the account's hash is still the one the password was
# verified against. FOR SHARE (PostgreSQL) holds the user's row until commit: a reset's or
# change's UPDATE of the hash waits (and then ends this session too), or committed first
# (and then nothing is written). On SQLite, writers take turns anyway.
START_SESSION = (
    insert(sessions)
    .from_select(
        [
            "id",
            "user_id",
            "created_at",
            "last_used_at",
            "expires_at",
            "absolute_expires_at",
            "user_agent",
            "ip_address",
        ],
        select(
            SID,
            users.c.id,
            NOW,
            NOW,
            capped_expiry(RENEWED, ABSOLUTE),
            ABSOLUTE,
            CLIENT_AGENT,
            CLIENT_IP,
        )
        .where(
            users.c.id == UID,
            users.c.password_hash == bindparam("verified_hash"),
            account_active(),
        )
        .with_for_update(read=True),
    )
    .returning(sessions.c.expires_at)
)

# Spend a refresh token of a live session: whether this matched decides which of several
# concurrent requests rotated it. Lock order: the token row, then the session row (as
# revocation takes them), so the two never deadlock.
SPEND_TOKEN = (
    update(tokens)
    .where(
        tokens.c.token_hash == bindparam("presented_hash"),
        token_spendable(),
        select(sessions.c.id).where(sessions.c.id == tokens.c.session_id, session_live()).exists(),
        select(users.c.id).where(users.c.id == tokens.c.user_id, account_active()).exists(),
    )
    .values(spent_at=NOW, last_used_at=NOW, successor_sealed=bindparam("sealed"))
    .returning(tokens.c.session_id, tokens.c.user_id)
)


def renew_session(session_id: Any) -> Any:
    """Mark a live session used and push its expiry out, capped; its user for the response."""
    return (
        update(sessions)
        .where(sessions.c.id == session_id, session_live())
        .values(
            last_used_at=NOW,
            expires_at=capped_expiry(),
            ip_address=CLIENT_IP,
            user_agent=CLIENT_AGENT,
        )
        .returning(
            sessions.c.id,
            sessions.c.expires_at,
            sessions.c.user_id,
            *_user_columns(sessions.c.user_id),
        )
    )


def insert_token(user_id: Any, session_id: Any, expires_at: Any) -> Any:
    """Add the live link (hash `link_hash`) of a session's chain."""
    return insert(tokens).from_select(
        [
            "user_id",
            "session_id",
            "token_hash",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked",
            "user_agent",
            "ip_address",
        ],
        select(
            user_id,
            session_id,
            bindparam("link_hash", type_=tokens.c.token_hash.type),
            NOW,
            expires_at,
            NOW,
            false(),
            CLIENT_AGENT,
            CLIENT_IP,
        ),
    )


RENEW_SESSION = renew_session(SID)
INSERT_TOKEN = insert_token(UID, SID, bindparam("link_expires", type_=UTCDateTime()))


def _rotation() -> Any:
    """PostgreSQL: SPEND_TOKEN, renew_session and insert_token as one statement (data-
    modifying CTEs commit or fail together), one round trip; a row if the token was spent,
    with the renewed session's columns NULL if it ended meanwhile (nothing renewed)."""
    spent = SPEND_TOKEN.cte("spent")
    renewed = renew_session(spent.c.session_id).cte("renewed")
    successor = insert_token(renewed.c.user_id, renewed.c.id, renewed.c.expires_at)
    return (
        select(spent.c.session_id, spent.c.user_id, *renewed.c)
        .select_from(spent.outerjoin(renewed, true()))
        .add_cte(successor.cte("successor"))
    )


ROTATE = _rotation()

# A presented token that could not be spent, and what decides between a retry and reuse.
PRESENTED_TOKEN = (
    select(
        tokens.c.session_id,
        tokens.c.user_id,
        tokens.c.spent_at,
        tokens.c.successor_sealed,
        session_live().label("session_live"),
        tokens.c.revoked,
        (tokens.c.expires_at > NOW).label("unexpired"),
        account_active().label("account_active"),
    )
    .join(sessions, sessions.c.id == tokens.c.session_id)
    .join(users, users.c.id == tokens.c.user_id)
    .where(tokens.c.token_hash == bindparam("presented_hash"))
)

# The successor a retry within the grace window gets back, while it is itself spendable.
SPENDABLE_SUCCESSOR = select(
    tokens.c.expires_at,
    tokens.c.ip_address,
    tokens.c.user_agent,
    *_user_columns(tokens.c.user_id),
).where(tokens.c.token_hash == bindparam("successor_hash"), token_spendable())


# Revocation: tokens first, then sessions, the lock order of rotation (no deadlock on
# PostgreSQL). Ending a session counts only live ones (the row count).
KEEP = bindparam("keep", type_=sessions.c.id.type)  # NIL_SESSION when keeping none
NIL_SESSION = uuid.UUID(int=0)  # never a session's id (those are random, version 4)


def _revoke_tokens(*where: ColumnElement[bool]) -> Any:
    return (
        update(tokens)
        .where(*where, tokens.c.revoked.is_(False))
        .values(revoked=True, revoked_at=NOW)
    )


def _end_sessions(*where: ColumnElement[bool]) -> Any:
    return (
        update(sessions)
        .where(*where, session_live())
        .values(revoked_at=NOW, revoke_reason=bindparam("reason"))
    )


REVOKE_SESSION_TOKENS = _revoke_tokens(tokens.c.session_id == SID)
END_SESSION = _end_sessions(sessions.c.id == SID)
REVOKE_USER_TOKENS = _revoke_tokens(tokens.c.user_id == UID, tokens.c.session_id != KEEP)
END_USER_SESSIONS = _end_sessions(sessions.c.user_id == UID, sessions.c.id != KEEP)
