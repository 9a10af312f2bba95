"""Database plumbing: declarative base, aware-UTC datetimes, engine factory, session per request."""

from __future__ import annotations

import fcntl
import os
import re
import select
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Execution option that makes the next transaction on SQLite take the write lock up front.
_WRITE_OPTION = "authsvc_write"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a CASE/RETURNING expression SQLite did not type
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create the app's one engine. SQLite: WAL, foreign keys, explicit BEGIN for write locks."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            hide_parameters=True,  # errors and logs never show bound values (hashes, emails)
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
    event.listen(engine, "checkout", _drop_ended_connection)
    return engine


def _drop_ended_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server has ended (restart, termination, a cut proxy) is
    replaced on checkout, not used. An idle connection has nothing to read: bytes or EOF
    waiting on its socket mean the server has spoken last. This costs a poll(2), where
    pool_pre_ping costs a round trip on every checkout; a connection that a network drops
    silently fails its first statement (503), and the pool then replaces it."""
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the database connection was closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the database server ended this connection")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN itself so writers can ask for BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads first cannot be upgraded to a writer once another
        # connection has committed (SQLITE_BUSY, no retry); use cases that write take the
        # lock first and wait for it in the busy handler instead.
        immediate = conn.get_execution_options().get(_WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class _WriterQueue:
    """SQLite admits one writer at a time and makes the others poll with growing sleeps
    (1, 2, 5 … 100 ms), which wrecks latency when writers contend. Writers of every thread
    and worker process queue on an flock of a file beside the database instead: the
    kernel hands the lock to the next one the moment it is released."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()  # flock excludes per open file, so one per thread

    def acquire(self) -> None:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            fd = self._local.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._local.fd, fcntl.LOCK_UN)


_writer_queues: dict[str, _WriterQueue] = {}
_WRITE_LOCK = "authsvc_write_lock"


def writer_queue(engine: Engine) -> _WriterQueue | None:
    """The queue of SQLite writers of `engine`'s database file; None for other databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    path = f"{database}.writers"
    return _writer_queues.get(path) or _writer_queues.setdefault(path, _WriterQueue(path))


@event.listens_for(Session, "after_transaction_end")
def _release_writer_lock(session: Session, transaction: Any) -> None:
    if transaction.parent is None and (queue := session.info.pop(_WRITE_LOCK, None)):
        queue.release()


def begin_write(session: Session) -> None:
    """Open the use case's write transaction (on SQLite: BEGIN IMMEDIATE, after waiting
    for its turn in the writer queue; the turn ends with the transaction).

    Call it first in a service function that writes. A transaction that has only read so
    far (a bearer check) is ended and reopened; ORM objects reload lazily.
    """
    if session.in_transaction():
        if session.get_bind().dialect.name != "sqlite":
            return
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("begin_write() after unflushed changes")
        session.rollback()
    queue = writer_queue(session.get_bind())
    if queue is not None:
        queue.acquire()
        session.info[_WRITE_LOCK] = queue
    try:
        session.connection(execution_options={_WRITE_OPTION: True})
    except BaseException:
        if session.info.pop(_WRITE_LOCK, None):
            queue.release()
        raise


class _ThreadConnections:
    """One DBAPI connection per thread for the hot paths' hand-written SQL (`driver_connection`).

    Outside the pool: checking a connection out and back in, switching it to autocommit and
    back and the pool's reset cost more Python than a primary-key SELECT does. Each thread
    keeps its own, in autocommit on PostgreSQL (a statement is its own transaction; SQLite
    connections are in autocommit until BEGIN). A connection the server has ended is replaced
    before use (the poll of `_drop_ended_connection`), one that failed with a disconnect right
    after, one older than the pool's recycle time on its next use; all close with the engine
    (`Engine.dispose()`).
    """

    RECYCLE = 1800.0  # seconds, as the pool's pool_recycle

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = engine.dialect.name == "postgresql"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[Any] = set()  # every thread's pooled-connection wrapper, detached
        event.listen(engine, "engine_disposed", self._close_all)

    def get(self) -> Any:
        held = getattr(self._local, "held", None)
        if held is not None and not self._usable(held):
            self._discard()
            held = None
        if held is None:
            pooled = self.engine.raw_connection()
            connection = pooled.driver_connection  # (detached, the wrapper forgets it)
            pooled.detach()  # ours until closed; the pool no longer counts it
            if self.postgresql:
                connection.autocommit = True
                if connection.info.encoding != "utf-8":  # what execute_prepared speaks
                    connection.execute("SET client_encoding TO 'UTF8'")
            with self._lock:
                self._open.add(pooled)
            held = self._local.held = _Held(pooled, connection)
            # A thread that ends takes its connection with it (its locals are dropped).
            weakref.finalize(held, self._close, pooled)
        return held

    def _usable(self, held: _Held) -> bool:
        if time.monotonic() - held.opened > self.RECYCLE:
            return False
        if not self.postgresql:
            return True
        connection = held.connection
        # As _drop_ended_connection, with the poll object made once per connection.
        return not (connection.closed or connection.broken or held.poller.poll(0))

    def _discard(self) -> None:
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            self._close(held.pooled)

    def _close(self, pooled: Any) -> None:
        with self._lock:
            if pooled not in self._open:
                return
            self._open.discard(pooled)
        with suppress(Exception):
            pooled.close()

    def _close_all(self, _engine: Any = None) -> None:
        with self._lock:
            open_, self._open = self._open, set()
        for pooled in open_:
            with suppress(Exception):
                pooled.close()


class Statement:
    """A PostgreSQL statement for `_Held.execute_prepared`: its text with `%(name)s`
    placeholders made $1, $2 … (the order `dump` takes values in), and each parameter's
    type, which says how its value is sent: `bytea` raw, anything else as text (a datetime in
    ISO 8601, which PostgreSQL reads whatever its DateStyle; a bool as t or f), NULL for
    None."""

    # Type OIDs. "text" sends 0 (unknown), as psycopg sends a str: the server types it from
    # the statement, so a varchar column or comparison takes it as it is.
    TYPES = {"text": 0, "bool": 16, "bytea": 17, "uuid": 2950, "timestamptz": 1184}

    def __init__(self, name: str, sql: str, types: dict[str, str]) -> None:
        self.name = name.encode()
        self.text = sql
        self.params = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
        if set(self.params) != set(types):
            raise ValueError(f"types for exactly {self.params} are needed")
        numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${self.params.index(m.group(1)) + 1}", sql)
        self.sql = numbered.encode()
        self.types = [self.TYPES[types[name]] for name in self.params]
        self.formats = [1 if t == self.TYPES["bytea"] else 0 for t in self.types]

    def dump(self, values: Sequence[Any]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for value in values:
            if value is None or isinstance(value, bytes):
                out.append(value)
            elif isinstance(value, bool):
                out.append(b"t" if value else b"f")
            elif isinstance(value, datetime):
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to a timestamptz parameter")
                out.append(value.isoformat().encode())
            else:
                text = str(value)
                if "\x00" in text:  # libpq reads a text parameter up to its first NUL
                    raise ValueError("PostgreSQL text cannot hold NUL")
                out.append(text.encode())
        return out


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def binary_timestamptz(value: bytes | None) -> datetime | None:
    """A timestamptz in PostgreSQL's binary format: microseconds since 2000-01-01 UTC."""
    if value is None:
        return None
    return _PG_EPOCH + timedelta(microseconds=int.from_bytes(value, "big", signed=True))


def binary_uuid(value: bytes | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(bytes=value)


def binary_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


class _Held:
    """A thread's hot-path connection (see `_ThreadConnections`), with one cursor kept for
    all its statements: a new cursor per statement cost a quarter of a primary-key SELECT.
    `execute` returns that cursor, as the DBAPI connections' own `execute` returns theirs."""

    __slots__ = ("__weakref__", "connection", "cursor", "opened", "poller", "pooled", "prepared")

    def __init__(self, pooled: Any, connection: Any) -> None:
        self.pooled = pooled
        self.connection = connection
        self.cursor = connection.cursor()
        self.opened = time.monotonic()
        self.prepared: set[bytes] = set()  # names of this connection's Statements
        self.poller = None
        if hasattr(connection, "fileno"):  # a client of a server (not SQLite's file)
            self.poller = select.poll()  # readable while idle: the server ended it
            self.poller.register(connection.fileno(), select.POLLIN)

    def execute(self, statement: str, *parameters: Any) -> Any:
        self.cursor.execute(statement, *parameters)
        return self.cursor

    def execute_prepared(self, statement: Statement, parameters: Sequence[Any]) -> Any:
        """PostgreSQL: run `statement` with `parameters` in its order, as a prepared statement
        of this connection, through libpq itself (psycopg's `pq` interface); the result, in
        binary. A cursor's execute costs twice the client CPU for the same round trip."""
        from psycopg import pq

        pgconn = self.connection.pgconn
        if statement.name not in self.prepared:
            result = pgconn.prepare(statement.name, statement.sql, statement.types)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise self._error(result)
            self.prepared.add(statement.name)
        result = pgconn.exec_prepared(
            statement.name, statement.dump(parameters), statement.formats, 1
        )
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise self._error(result)
        return result

    def _error(self, result: Any) -> Exception:
        """The psycopg error a failed libpq call stands for, as a cursor would raise it."""
        from psycopg import OperationalError, errors, pq

        pgconn = self.connection.pgconn
        if pgconn.status != pq.ConnStatus.OK:  # the server or the network has gone
            message = (pgconn.error_message or b"connection lost").decode(errors="replace")
            return OperationalError(message.strip())
        return errors.error_from_result(result, encoding=self.connection.info.encoding)

    def rollback(self) -> None:
        self.connection.rollback()

    @property
    def in_transaction(self) -> bool:  # SQLite: BEGIN sent and not yet ended
        return bool(self.connection.in_transaction)


_thread_connections: weakref.WeakKeyDictionary[Engine, _ThreadConnections] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def driver_connection(engine: Engine) -> Iterator[Any]:
    """This thread's own DBAPI connection to `engine`'s database, for hand-written SQL (the
    hot paths of `services.fastpath`); in autocommit on both backends until BEGIN is sent.
    What it yields has `execute` (which returns the connection's one cursor), `rollback`
    and, on SQLite, `in_transaction`.

    Driver errors come out as SQLAlchemy's own, with parameters hidden, so the app's 503 for
    an unreachable database applies; a connection the error shows broken is dropped, and the
    pool invalidated as SQLAlchemy's own handling does.
    """
    connections = _thread_connections.get(engine)
    if connections is None:
        with _thread_connections_lock:
            connections = _thread_connections.get(engine)
            if connections is None:
                connections = _thread_connections[engine] = _ThreadConnections(engine)
    dialect = engine.dialect
    driver_error = dialect.loaded_dbapi.Error
    held = None
    try:
        held = connections.get()
        yield held
    except driver_error as exc:
        gone = held is None or dialect.is_disconnect(exc, held.connection, None)
        if gone:
            connections._discard()
            # Every connection the pool made before is suspect too (a restart, a dropped
            # network): each is replaced on its next checkout instead of failing a request.
            engine.pool._invalidate(None, exc)  # type: ignore[arg-type]
        raise DBAPIError.instance(
            None,
            None,
            exc,
            driver_error,
            hide_parameters=True,
            connection_invalidated=gone,
            dialect=dialect,
        ) from exc


_thread_connections_lock = threading.Lock()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def init_app(app: Any, engine: Engine) -> None:
    """One session per request (or CLI command), closed at teardown."""
    app.extensions["authsvc_db"] = (engine, make_session_factory(engine))
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    from flask import current_app, g

    if "db_session" not in g:
        g.db_session = current_app.extensions["authsvc_db"][1]()
    return g.db_session


def get_engine() -> Engine:
    from flask import current_app

    return current_app.extensions["authsvc_db"][0]


def _close_session(_exc: BaseException | None) -> None:
    from flask import g

    session = g.pop("db_session", None)
    if session is not None:
        session.close()
