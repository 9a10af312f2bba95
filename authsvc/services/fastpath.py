"""The statements on every client's request path, as hand-written SQL on the pooled DBAPI
connection: the bearer check's session lookup, the refresh-token rotation, and a successful
login's lookup by email and its writes.

Through the ORM session each cost more Python than database time, and on PostgreSQL they
took 4 and 6 round trips (pre-ping, BEGIN, the statements, ROLLBACK or COMMIT). Here:

- the bearer lookup is one autocommit SELECT by primary key;
- a rotation on PostgreSQL is one statement, three data-modifying CTEs (spend the token,
  renew the session, insert the successor) that commit or fail together like any single
  statement; on SQLite it is one BEGIN IMMEDIATE transaction of three statements, taken in
  the same writer queue as every other writer (`db.begin_write`);
- a login reads the account in one autocommit SELECT by email (before the password check,
  which runs outside any transaction), then writes its session, the session's first refresh
  token and the `login_succeeded` event in one statement on PostgreSQL (three INSERTs, one
  per CTE), in one BEGIN IMMEDIATE transaction on SQLite.

Values go in and come out through the SQLAlchemy type processors the ORM itself uses, so
both paths read and write the same representations (UUIDs as hex on SQLite, UTC times). On
PostgreSQL all four statements skip psycopg's cursor: they run as named prepared statements
through libpq itself (`db._Held.execute_prepared`), with binary results decoded in `db`; a
cursor's execute cost twice the client CPU of the same round trip.
Every other use case (the grace-window retry, reuse detection, logout, a failed login, a
login that upgrades its password hash …) stays on the ORM session in `services.tokens` and
`services.accounts`; the suites run all of it on both backends.
"""

from __future__ import annotations

import json
import re
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Engine, LargeBinary, Uuid

from ..db import (
    Statement,
    UTCDateTime,
    binary_text,
    binary_timestamptz,
    binary_uuid,
    driver_connection,
    writer_queue,
)
from ..errors import InvalidCredentials
from ..models import User
from ..runtime import Runtime
from ..security.tokens import hash_token, new_token
from .common import ClientInfo, TokenPair
from .events import check_event_type, log_event

# PostgreSQL: spend, renew and insert in one statement. The spend also requires a live
# session, so a token of an ended session is never spent: it stays what it was, exactly as
# a rolled-back transaction would leave it. Lock order is the token row, then the session
# row: the order of revocation (`tokens._revoke_sessions`), so the two never deadlock.
_ROTATE_POSTGRESQL = """
WITH spent AS (
    UPDATE refresh_tokens AS t
       SET spent_at = %(now)s, last_used_at = %(now)s, successor_sealed = %(sealed)s
     WHERE t.token_hash = %(token_hash)s
       AND t.spent_at IS NULL AND NOT t.revoked AND t.expires_at > %(now)s
       AND EXISTS (SELECT 1 FROM sessions AS l
                    WHERE l.id = t.session_id AND l.revoked_at IS NULL
                      AND l.absolute_expires_at > %(now)s)
 RETURNING t.session_id, t.user_id
), renewed AS (
    UPDATE sessions AS s
       SET last_used_at = %(now)s,
           expires_at = LEAST(s.absolute_expires_at, %(renewed)s),
           ip_address = %(ip_address)s, user_agent = %(user_agent)s
      FROM spent
     WHERE s.id = spent.session_id
       AND s.revoked_at IS NULL AND s.absolute_expires_at > %(now)s
 RETURNING s.id, s.user_id, s.expires_at
), successor AS (
    INSERT INTO refresh_tokens (user_id, session_id, token_hash, created_at, expires_at,
                                last_used_at, revoked, user_agent, ip_address)
    SELECT renewed.user_id, renewed.id, %(successor_hash)s, %(now)s, renewed.expires_at,
           %(now)s, false, %(user_agent)s, %(ip_address)s
      FROM renewed
)
SELECT spent.session_id, spent.user_id, renewed.expires_at,
       (SELECT email FROM users WHERE users.id = renewed.user_id),
       (SELECT name FROM users WHERE users.id = renewed.user_id),
       (SELECT created_at FROM users WHERE users.id = renewed.user_id)
  FROM spent LEFT JOIN renewed ON true
"""

_ROTATE = Statement(
    "authsvc_rotate",
    _ROTATE_POSTGRESQL,
    {
        "now": "timestamptz",
        "sealed": "bytea",
        "token_hash": "text",
        "renewed": "timestamptz",
        "ip_address": "text",
        "user_agent": "text",
        "successor_hash": "text",
    },
)

# SQLite: the same three steps inside the caller's BEGIN IMMEDIATE.
_SPEND_SQLITE = """
UPDATE refresh_tokens
   SET spent_at = :now, last_used_at = :now, successor_sealed = :sealed
 WHERE token_hash = :token_hash AND spent_at IS NULL AND revoked = 0 AND expires_at > :now
RETURNING session_id, user_id
"""
_RENEW_SQLITE = """
UPDATE sessions
   SET last_used_at = :now,
       expires_at = CASE WHEN absolute_expires_at < :renewed
                         THEN absolute_expires_at ELSE :renewed END,
       ip_address = :ip_address, user_agent = :user_agent
 WHERE id = :session_id AND revoked_at IS NULL AND absolute_expires_at > :now
RETURNING expires_at,
          (SELECT email FROM users WHERE users.id = sessions.user_id),
          (SELECT name FROM users WHERE users.id = sessions.user_id),
          (SELECT created_at FROM users WHERE users.id = sessions.user_id)
"""
_INSERT_SQLITE = """
INSERT INTO refresh_tokens (user_id, session_id, token_hash, created_at, expires_at,
                            last_used_at, revoked, user_agent, ip_address)
VALUES (:user_id, :session_id, :successor_hash, :now, :expires_at, :now, 0,
        :user_agent, :ip_address)
"""

# The bearer check: the session (by primary key) must be live and the token's user's own.
_PRINCIPAL = """
SELECT users.id, users.email, users.name, users.created_at
  FROM sessions JOIN users ON users.id = sessions.user_id
 WHERE sessions.id = {session_id} AND sessions.user_id = {user_id}
   AND sessions.revoked_at IS NULL
"""


# A login: the account by its (normalised, unique) email.
_CREDENTIALS = """
SELECT id, email, name, created_at, password_hash FROM users WHERE email = {email}
"""

# ... and, the password verified, what `tokens.start_session` and `events.record_event` add
# through the ORM, column for column: the omitted columns have no defaults (NULL there too).
_LOGIN_INSERTS = (
    """
INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, absolute_expires_at,
                      user_agent, ip_address)
VALUES (:session_id, :user_id, :now, :now, :expires_at, :absolute_expires_at,
        :user_agent, :ip_address)
""",
    """
INSERT INTO refresh_tokens (user_id, session_id, token_hash, created_at, expires_at,
                            last_used_at, revoked, user_agent, ip_address)
VALUES (:user_id, :session_id, :token_hash, :now, :expires_at, :now, :revoked,
        :user_agent, :ip_address)
""",
    """
INSERT INTO security_events (user_id, type, created_at, ip_address, user_agent, session_id,
                             details)
VALUES (:user_id, :event_type, :now, :ip_address, :user_agent, :session_id, :details)
""",
)


def _pyformat(statement: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", statement)


# Written only while the account's hash is still the one the password was checked against:
# a password reset or change that commits meanwhile ends every session, and must not miss
# one that a login with the old password was about to add.
_STILL_VERIFIED = "SELECT id FROM users WHERE id = :user_id AND password_hash = :verified_hash"


def _from_verified(statement: str) -> str:
    """INSERT … VALUES (…) as INSERT … SELECT … FROM verified (PostgreSQL)."""
    head, values = statement.split("VALUES (")
    values = values.strip().removesuffix(")").replace(":details", "CAST(:details AS json)")
    return f"{head}SELECT {values} FROM verified"  # noqa: S608 (constant SQL text, no input)


# PostgreSQL: the check and the three INSERTs as one statement. FOR SHARE holds the account
# row until the statement commits: a reset's UPDATE of the hash waits for it (and then ends
# this session too), or has committed first (and then nothing is written). The session id is
# made in Python, so no INSERT needs another's result; the token's foreign key to the new
# session is checked at the end of the statement (non-deferred constraints' triggers fire
# then), when it exists. The row count says whether the login was written.
_LOGIN_POSTGRESQL = _pyformat(
    "WITH verified AS ({} FOR SHARE), new_session AS ({}), first_token AS ({}), "  # noqa: S608
    "event AS ({}) SELECT count(*) FROM verified".format(
        _STILL_VERIFIED, *map(_from_verified, _LOGIN_INSERTS)
    )
)

_LOGIN = Statement(
    "authsvc_login",
    _LOGIN_POSTGRESQL,
    {
        "verified_hash": "text",
        "session_id": "uuid",
        "user_id": "uuid",
        "token_hash": "text",
        "now": "timestamptz",
        "expires_at": "timestamptz",
        "absolute_expires_at": "timestamptz",
        "revoked": "bool",
        "ip_address": "text",
        "user_agent": "text",
        "event_type": "text",
        "details": "text",  # JSON text, cast in the statement
    },
)


@dataclass(frozen=True)
class UserInfo:
    """What a response shows of its user, when no ORM object was loaded for it."""

    id: uuid.UUID
    email: str
    name: str | None
    created_at: datetime


@dataclass(frozen=True)
class Rotated:
    """A spent token's session, its renewed expiry and its user; `user` None if the session
    ended (revoked, or past its absolute lifetime) and nothing was written."""

    session_id: uuid.UUID
    expires_at: datetime | None
    user: UserInfo | None


@dataclass(frozen=True)
class Credentials:
    """An account found by email, with the hash its password is checked against."""

    user: UserInfo
    password_hash: str


def _processor(kind: str, type_: Any, engine: Engine) -> Callable[[Any], Any]:
    dialect = engine.dialect
    impl = type_.dialect_impl(dialect)
    process = (
        impl.bind_processor(dialect) if kind == "bind" else impl.result_processor(dialect, None)
    )
    return process or (lambda value: value)


class FastPath:
    """The hot statements of one engine, with its dialect's value conversions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = engine.dialect.name == "postgresql"
        self._uuid_in = _processor("bind", Uuid(), engine)
        self._uuid_out = _processor("result", Uuid(), engine)
        self._time_in = _processor("bind", UTCDateTime(), engine)
        self._time_out = _processor("result", UTCDateTime(), engine)
        self._bytes_in = _processor("bind", LargeBinary(), engine)
        # An event's details as the ORM writes them (None is JSON 'null', not SQL NULL): for
        # libpq the text the engine's JSON serializer makes, on SQLite the type's processor.
        self._details_in = (
            getattr(engine.dialect, "_json_serializer", None) or json.dumps
            if self.postgresql
            else _processor("bind", JSON(), engine)
        )
        self._queue = writer_queue(engine)
        placeholder = "%({})s" if self.postgresql else ":{}"
        self._principal = _PRINCIPAL.format(
            session_id=placeholder.format("session_id"), user_id=placeholder.format("user_id")
        )
        if self.postgresql:
            self._principal_statement = Statement(
                "authsvc_principal", self._principal, {"session_id": "uuid", "user_id": "uuid"}
            )
        self._credentials = _CREDENTIALS.format(email=placeholder.format("email"))
        if self.postgresql:
            self._credentials_statement = Statement(
                "authsvc_credentials", self._credentials, {"email": "text"}
            )

    def principal(self, session_id: uuid.UUID, user_id: uuid.UUID) -> UserInfo | None:
        """The user behind a live session, or None (one indexed lookup, in autocommit)."""
        if self.postgresql:
            with driver_connection(self.engine) as conn:
                result = conn.execute_prepared(self._principal_statement, (session_id, user_id))
                if not result.ntuples:
                    return None
                value = result.get_value
                return UserInfo(
                    binary_uuid(value(0, 0)),
                    binary_text(value(0, 1)),
                    binary_text(value(0, 2)),
                    binary_timestamptz(value(0, 3)),
                )
        params = {"session_id": self._uuid_in(session_id), "user_id": self._uuid_in(user_id)}
        with driver_connection(self.engine) as conn:
            row = conn.execute(self._principal, params).fetchone()
        if row is None:
            return None
        return UserInfo(self._uuid_out(row[0]), row[1], row[2], self._time_out(row[3]))

    def rotate(
        self,
        *,
        token_hash: str,
        successor_hash: str,
        sealed: bytes,
        now: datetime,
        renewed: datetime,
        ip_address: str | None,
        user_agent: str | None,
    ) -> Rotated | None:
        """Spend the token `token_hash` names and add its successor, if it is spendable
        (unspent, unrevoked, unexpired); None if it is not, and then nothing was written."""
        params = {
            "token_hash": token_hash,
            "successor_hash": successor_hash,
            "sealed": sealed,
            "now": now,
            "renewed": renewed,
            "ip_address": ip_address,
            "user_agent": user_agent,
        }
        if self.postgresql:
            return self._rotate_postgresql(params)
        params.update(
            sealed=self._bytes_in(sealed), now=self._time_in(now), renewed=self._time_in(renewed)
        )
        return self._rotate_sqlite(params)

    def _rotate_postgresql(self, params: dict[str, Any]) -> Rotated | None:
        values = [params[name] for name in _ROTATE.params]
        with driver_connection(self.engine) as conn:
            result = conn.execute_prepared(_ROTATE, values)
            if not result.ntuples:
                return None
            session_id, user_id, expires_at, email, name, created_at = (
                result.get_value(0, column) for column in range(6)
            )
        session_uuid = binary_uuid(session_id)
        if expires_at is None:
            return Rotated(session_uuid, None, None)
        user = UserInfo(
            binary_uuid(user_id),
            binary_text(email),
            binary_text(name),
            binary_timestamptz(created_at),
        )
        return Rotated(session_uuid, binary_timestamptz(expires_at), user)

    def _rotate_sqlite(self, params: dict[str, Any]) -> Rotated | None:
        with self._sqlite_write() as conn:
            rotated = self._rotate_sqlite_statements(conn, params)
            if rotated is not None and rotated.user is not None:
                conn.execute("COMMIT")
            return rotated

    def _rotate_sqlite_statements(self, conn: Any, params: dict[str, Any]) -> Rotated | None:
        spent = conn.execute(_SPEND_SQLITE, params).fetchone()
        if spent is None:
            return None
        session_id, user_id = spent
        params["session_id"], params["user_id"] = session_id, user_id
        renewed = conn.execute(_RENEW_SQLITE, params).fetchone()
        session_uuid, user_uuid = self._uuid_out(session_id), self._uuid_out(user_id)
        if renewed is None:
            return Rotated(session_uuid, None, None)
        expires_at, email, name, created_at = renewed
        params["expires_at"] = expires_at  # as stored: the same text goes into the new row
        conn.execute(_INSERT_SQLITE, params)
        user = UserInfo(user_uuid, email, name, self._time_out(created_at))
        return Rotated(session_uuid, self._time_out(expires_at), user)

    def credentials(self, email: str) -> Credentials | None:
        """The account of a normalised email, or None (one indexed lookup, in autocommit)."""
        if self.postgresql:
            with driver_connection(self.engine) as conn:
                result = conn.execute_prepared(self._credentials_statement, (email,))
                if not result.ntuples:
                    return None
                user_id, stored_email, name, created_at, password_hash = (
                    result.get_value(0, column) for column in range(5)
                )
            return Credentials(
                UserInfo(
                    binary_uuid(user_id),
                    binary_text(stored_email),
                    binary_text(name),
                    binary_timestamptz(created_at),
                ),
                binary_text(password_hash),
            )
        with driver_connection(self.engine) as conn:
            row = conn.execute(self._credentials, {"email": email}).fetchone()
        if row is None:
            return None
        user_id, email, name, created_at, password_hash = row
        return Credentials(
            UserInfo(self._uuid_out(user_id), email, name, self._time_out(created_at)),
            password_hash,
        )

    def start_session(
        self,
        *,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        token_hash: str,
        now: datetime,
        expires_at: datetime,
        absolute_expires_at: datetime,
        ip_address: str | None,
        user_agent: str | None,
        event_type: str,
        verified_hash: str,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Write a new session, its first refresh token and its security event, all or none;
        none (False) if the account's password hash is no longer `verified_hash`."""
        check_event_type(event_type)
        params = {
            "verified_hash": verified_hash,
            "session_id": self._uuid_in(session_id),
            "user_id": self._uuid_in(user_id),
            "token_hash": token_hash,
            "now": self._time_in(now),
            "expires_at": self._time_in(expires_at),
            "absolute_expires_at": self._time_in(absolute_expires_at),
            "revoked": False,
            "ip_address": ip_address,
            "user_agent": user_agent,
            "event_type": event_type,
            "details": self._details_in(details),
        }
        if self.postgresql:
            with driver_connection(self.engine) as conn:
                result = conn.execute_prepared(_LOGIN, [params[name] for name in _LOGIN.params])
                written = result.get_value(0, 0)  # count(*), a binary int8
            return int.from_bytes(written, "big") > 0
        with self._sqlite_write() as conn:  # writers take turns: no reset runs meanwhile
            if conn.execute(_STILL_VERIFIED, params).fetchone() is None:
                return False
            for statement in _LOGIN_INSERTS:
                conn.execute(statement, params)
            conn.execute("COMMIT")
        return True

    @contextmanager
    def _sqlite_write(self) -> Iterator[Any]:
        """A BEGIN IMMEDIATE transaction on this thread's connection, in the writer queue; what
        the body leaves uncommitted (it raised, or had nothing to write) is rolled back."""
        if self._queue is not None:
            self._queue.acquire()
        try:
            with driver_connection(self.engine) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.rollback()
        finally:
            if self._queue is not None:
                self._queue.release()


_fast_paths: weakref.WeakKeyDictionary[Engine, FastPath] = weakref.WeakKeyDictionary()


def fast_path(engine: Engine) -> FastPath:
    """The FastPath of `engine`, built on first use."""
    found = _fast_paths.get(engine)
    if found is None:
        found = _fast_paths.setdefault(engine, FastPath(engine))
    return found


def _seconds_left(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))


def token_pair(
    rt: Runtime,
    user: User | UserInfo,
    session_id: uuid.UUID,
    refresh: str,
    refresh_exp: datetime,
    now: datetime,
) -> TokenPair:
    """The response of a login, refresh or reissue: a new access token beside `refresh`."""
    access, expires_in = rt.keys.issue_access_token(str(user.id), str(session_id), now)
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=expires_in,
        refresh_expires_in=_seconds_left(refresh_exp, now),
        user=user,
        session_id=session_id,
    )


def start_login_session(
    fast: FastPath,
    rt: Runtime,
    user: UserInfo,
    verified_hash: str,
    client: ClientInfo,
    now: datetime,
) -> TokenPair:
    """After a successful password check: what `tokens.start_session` and
    `record_event("login_succeeded")` do through the ORM, in one write (one statement on
    PostgreSQL), logged as the same JSON line."""
    s = rt.settings
    absolute = now + timedelta(seconds=s.SESSION_MAX_LIFETIME)
    expires = min(now + timedelta(seconds=s.REFRESH_TOKEN_TTL), absolute)
    session_id = uuid.uuid4()
    raw = new_token()
    event_type = "login_succeeded"
    written = fast.start_session(
        session_id=session_id,
        user_id=user.id,
        token_hash=hash_token(raw),
        now=now,
        expires_at=expires,
        absolute_expires_at=absolute,
        ip_address=client.ip_address,
        user_agent=client.user_agent,
        event_type=event_type,
        verified_hash=verified_hash,
    )
    if not written:  # the password was reset or changed since it was checked
        raise InvalidCredentials("invalid email or password")
    log_event(
        event_type, now=now, client=client, user_id=user.id, session_id=session_id, details=None
    )
    return token_pair(rt, user, session_id, raw, expires, now)
