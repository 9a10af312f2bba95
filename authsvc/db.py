"""Database plumbing: declarative base, aware-UTC datetimes, the engine, session per request,
and `transaction`, the one way a use case writes."""

from __future__ import annotations

import fcntl
import os
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Execution option that makes a transaction on SQLite take the write lock up front.
_IMMEDIATE = "authsvc_immediate"
_IN_TRANSACTION = "authsvc_in_transaction"


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
    """The app's one engine.

    Reads (a bearer check, a lookup) run in autocommit on both backends: one statement, no
    BEGIN and ROLLBACK around it. `transaction` opens each write's transaction: READ
    COMMITTED on PostgreSQL (at most `pool_size` connections), BEGIN IMMEDIATE on SQLite
    (WAL, foreign keys on).
    """
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
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=10,
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
        # Reads run in autocommit, as on PostgreSQL: each statement is its own transaction,
        # no BEGIN and ROLLBACK around a lookup. Writers (`transaction`) take the write lock
        # up front: a deferred transaction that reads first cannot be upgraded to a writer
        # once another connection has committed (SQLITE_BUSY, no retry).
        if conn.get_execution_options().get(_IMMEDIATE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


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


def _writer_queue(engine: Engine) -> _WriterQueue | None:
    """The queue of SQLite writers of `engine`'s database file; None for other databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    path = f"{database}.writers"
    return _writer_queues.get(path) or _writer_queues.setdefault(path, _WriterQueue(path))


_AFTER_COMMIT = "authsvc_after_commit"


def after_commit(db: Session, action: Callable[[], None]) -> None:
    """Run `action` once the current transaction has committed (never if it rolls back):
    mail about a change goes out only when the change stands."""
    if not db.info.get(_IN_TRANSACTION):
        raise RuntimeError("after_commit() outside transaction()")
    db.info.setdefault(_AFTER_COMMIT, []).append(action)


def _run_after_commit(db: Session) -> None:
    for action in db.info.pop(_AFTER_COMMIT, []):
        action()


@contextmanager
def transaction(db: Session) -> Iterator[Session]:
    """The use case's write transaction: every write of authsvc goes through here, once per
    public service function, and nothing else commits or rolls back.

    SQLite: a turn in the writer queue, then BEGIN IMMEDIATE. PostgreSQL: READ COMMITTED
    (the engine's reads run in autocommit). A read-only transaction the session had open (a
    lookup before the slow password hash) ends first. Commits when the block ends; rolls
    back when it raises, except for an error that says its effects must stand
    (`keeps_effects`, e.g. reuse detection revoking a session): that commits, then raises.
    """
    if db.info.get(_IN_TRANSACTION):
        raise RuntimeError("transaction() inside transaction(): one per use case")
    if db.in_transaction():
        if db.new or db.dirty or db.deleted:
            raise RuntimeError("transaction() after unflushed changes")
        db.rollback()
    bind = db.get_bind()
    queue = _writer_queue(bind)
    if queue is not None:
        queue.acquire()
    db.info[_IN_TRANSACTION] = True
    try:
        postgresql = bind.dialect.name == "postgresql"
        db.connection(
            execution_options={"isolation_level": "READ COMMITTED"}
            if postgresql
            else {_IMMEDIATE: True}
        )
        yield db
        db.commit()
    except BaseException as exc:
        if getattr(exc, "keeps_effects", False) and db.in_transaction():
            db.commit()
        else:
            db.rollback()
            db.info.pop(_AFTER_COMMIT, None)
        raise
    finally:
        db.info.pop(_IN_TRANSACTION, None)
        if queue is not None:
            queue.release()
        _run_after_commit(db)


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
