"""A successful login off the ORM session (`services.fastpath`): it writes exactly the rows
the ORM path writes, in one statement on PostgreSQL, all or nothing, and its pair works."""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authsvc.db import begin_write, make_session_factory
from authsvc.errors import InvalidCredentials
from authsvc.logs import JsonFormatter
from authsvc.models import AuthSession, RefreshToken, SecurityEvent, User
from authsvc.security.tokens import hash_token
from authsvc.services import fastpath
from authsvc.services.common import ClientInfo
from authsvc.services.events import record_event
from authsvc.services.fastpath import UserInfo, fast_path, start_login_session
from authsvc.services.tokens import start_session
from conftest import PASSWORD, bearer

CLIENT = ClientInfo(ip_address="203.0.113.7", user_agent="fastpath-test/1.0")
CONCURRENT = 16


def _rows(engine: Any, table: str, column: str, value: Any) -> list[dict[str, Any]]:
    """Rows as the driver returns them (SQLite: the stored text), plus whether `details` is
    SQL NULL: psycopg reads JSON 'null' as None too."""
    extra = ", details IS NULL AS details_is_sql_null" if table == "security_events" else ""
    placeholder = "%(value)s" if engine.dialect.name == "postgresql" else ":value"
    with engine.connect() as conn:
        result = conn.exec_driver_sql(
            f"SELECT *{extra} FROM {table} WHERE {column} = {placeholder} ORDER BY id",
            {"value": value},
        )
        return [dict(row._mapping) for row in result]


def _stored_uuid(engine: Any, value: uuid.UUID) -> Any:
    return value if engine.dialect.name == "postgresql" else value.hex


def _written_by_login(engine: Any, session_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    stored = _stored_uuid(engine, session_id)
    return {
        "sessions": _rows(engine, "sessions", "id", stored),
        "refresh_tokens": _rows(engine, "refresh_tokens", "session_id", stored),
        "security_events": _rows(engine, "security_events", "session_id", stored),
    }


def _without(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in columns}


def _user_info(engine: Any, email: str = "alice@example.com") -> tuple[UserInfo, str]:
    with Session(engine) as db:
        user = db.scalars(select(User).where(User.email == email)).one()
        info = UserInfo(user.id, user.email, user.name, user.created_at)
        return info, user.password_hash


def test_fast_path_writes_the_rows_the_orm_writes(app, engine, user):
    rt = app.extensions["authsvc"]
    info, _ = _user_info(engine)
    now = datetime.now(UTC).replace(microsecond=123456)

    info, password_hash = _user_info(engine)
    fast = start_login_session(fast_path(engine), rt, info, password_hash, CLIENT, now)
    with make_session_factory(engine)() as db:  # as the app's: expire_on_commit=False
        orm_user = db.get_one(User, info.id)
        orm = start_session(db, rt, orm_user, CLIENT, now)
        record_event(
            db,
            "login_succeeded",
            now=now,
            client=CLIENT,
            user_id=orm_user.id,
            session_id=orm.session_id,
        )
        db.commit()

    written = _written_by_login(engine, fast.session_id)
    expected = _written_by_login(engine, orm.session_id)
    for table in written:
        assert len(written[table]) == len(expected[table]) == 1, table
    (session,), (orm_session,) = written["sessions"], expected["sessions"]
    (token,), (orm_token,) = written["refresh_tokens"], expected["refresh_tokens"]
    (logged,), (orm_logged,) = written["security_events"], expected["security_events"]

    # Column for column the same, in the same stored representation, but for the ids and
    # the token (which are new per login) ...
    assert _without(session, "id") == _without(orm_session, "id")
    assert _without(token, "id", "session_id", "token_hash") == _without(
        orm_token, "id", "session_id", "token_hash"
    )
    assert _without(logged, "id", "session_id") == _without(orm_logged, "id", "session_id")
    # ... which have the same shapes and point where they should.
    assert session["id"] == _stored_uuid(engine, fast.session_id)
    assert type(session["id"]) is type(orm_session["id"])
    assert token["session_id"] == logged["session_id"] == session["id"]
    assert token["token_hash"] == hash_token(fast.refresh_token)
    assert orm_token["token_hash"] == hash_token(orm.refresh_token)
    assert type(token["id"]) is type(orm_token["id"]) is int
    assert type(logged["id"]) is type(orm_logged["id"]) is int
    # What both wrote for the event's details=None: JSON 'null', not SQL NULL.
    assert logged["details_is_sql_null"] in (False, 0)
    assert session["revoked_at"] is None and session["revoke_reason"] is None
    assert token["spent_at"] is None and token["successor_sealed"] is None
    assert token["revoked"] in (False, 0) and token["revoked_at"] is None

    # The responses: the same user, the same lifetimes.
    assert fast.user.id == orm.user.id and fast.user.email == orm.user.email
    assert fast.user.created_at == orm.user.created_at
    assert (fast.expires_in, fast.refresh_expires_in) == (orm.expires_in, orm.refresh_expires_in)


@contextmanager
def _security_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("authsvc.security")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_login_through_the_orm_and_the_fast_path_alike(make_app, engine):
    """A hash under old argon2 parameters takes the ORM path (it is upgraded); the next
    login, the fast path. Their rows and log lines differ only in ids, tokens and times."""
    old = make_app(ARGON2_MEMORY_COST=64, ARGON2_TIME_COST=1).test_client()
    new = make_app(ARGON2_MEMORY_COST=128, ARGON2_TIME_COST=1).test_client()
    body = {"email": "alice@example.com", "password": PASSWORD}
    assert old.post("/api/auth/register", json=body).status_code == 201
    headers = {"User-Agent": "fastpath-test/1.0"}
    with _security_log() as log:
        through_orm = new.post("/api/auth/login", json=body, headers=headers)
        through_fast_path = new.post("/api/auth/login", json=body, headers=headers)
    assert through_orm.status_code == through_fast_path.status_code == 200
    _, password_hash = _user_info(engine)
    assert "m=128,t=1" in password_hash

    orm_pair, fast_pair = through_orm.get_json(), through_fast_path.get_json()
    assert _without(orm_pair, "access_token", "refresh_token") == _without(
        fast_pair, "access_token", "refresh_token"
    )
    orm_rows, fast_rows = ({} for _ in range(2))
    for pair, rows in ((orm_pair, orm_rows), (fast_pair, fast_rows)):
        with engine.connect() as conn:
            token = conn.execute(
                select(RefreshToken).where(
                    RefreshToken.token_hash == hash_token(pair["refresh_token"])
                )
            ).one()
            session = conn.execute(
                select(AuthSession).where(AuthSession.id == token.session_id)
            ).one()
            logged = conn.execute(
                select(SecurityEvent).where(SecurityEvent.session_id == token.session_id)
            ).one()
        rows.update(token=token._asdict(), session=session._asdict(), event=logged._asdict())

    times = ("created_at", "last_used_at", "expires_at", "absolute_expires_at")
    for rows in (orm_rows, fast_rows):
        session, token, logged = rows["session"], rows["token"], rows["event"]
        assert session["last_used_at"] == session["created_at"] == token["created_at"]
        assert token["last_used_at"] == logged["created_at"] == session["created_at"]
        assert session["expires_at"] == token["expires_at"]
        assert session["expires_at"] - session["created_at"] == timedelta(days=7)
        assert session["absolute_expires_at"] - session["created_at"] == timedelta(days=30)
    assert _without(orm_rows["session"], "id", *times) == _without(
        fast_rows["session"], "id", *times
    )
    token_keys = ("id", "session_id", "token_hash", *times)
    assert _without(orm_rows["token"], *token_keys) == _without(fast_rows["token"], *token_keys)
    assert _without(orm_rows["event"], "id", "session_id", "created_at") == _without(
        fast_rows["event"], "id", "session_id", "created_at"
    )

    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [entry["event"] for entry in logged] == ["login_succeeded", "login_succeeded"]
    orm_line, fast_line = logged
    assert fast_line["session_id"] == str(fast_rows["session"]["id"])
    varying = ("session_id", "at", "ts", "request_id")
    assert _without(orm_line, *varying) == _without(fast_line, *varying)
    assert set(orm_line) == set(fast_line)


def test_a_fast_path_pair_works(client, user, login):
    pair = login(**{"User-Agent": "fastpath-test/1.0"})
    assert pair["user"] == user["user"]
    assert pair["token_type"] == "bearer"
    headers = bearer(pair["access_token"])

    me = client.get("/api/auth/me", headers=headers)
    assert me.status_code == 200
    assert me.get_json() == user["user"]

    sessions = client.get("/api/auth/sessions", headers=headers).get_json()
    assert len(sessions) == 2
    (current,) = [s for s in sessions if s["current"]]
    assert current["user_agent"] == "fastpath-test/1.0"
    assert current["ip_address"] == "127.0.0.1"

    events = client.get("/api/auth/events", headers=headers).get_json()
    assert events[0]["type"] == "login_succeeded"
    assert events[0]["session_id"] == current["id"]

    rotated = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200
    headers = bearer(rotated.get_json()["access_token"])
    ended = client.post("/api/auth/logout-all", headers=headers)
    assert ended.status_code == 200
    assert ended.get_json() == {"revoked_sessions": 2}
    assert client.get("/api/auth/me", headers=headers).status_code == 401
    again = client.post(
        "/api/auth/refresh", json={"refresh_token": rotated.get_json()["refresh_token"]}
    )
    assert again.status_code == 401


@pytest.mark.parametrize(
    ("email", "password", "known"),
    [
        ("alice@example.com", "wrong password!!", True),
        ("nobody@example.com", PASSWORD, False),
        ("nobody", PASSWORD, False),
    ],
)
def test_failed_logins_still_fail_and_are_recorded(client, engine, user, email, password, known):
    response = client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_credentials"
    with engine.connect() as conn:
        failed = conn.execute(
            select(SecurityEvent.user_id, SecurityEvent.details, SecurityEvent.session_id).where(
                SecurityEvent.type == "login_failed"
            )
        ).one()
        sessions = conn.execute(select(AuthSession.id)).all()
    assert (failed.user_id is not None) is known
    assert failed.details == (None if known else {"reason": "unknown_email"})
    assert failed.session_id is None
    assert len(sessions) == 1  # the registration's


def test_concurrent_logins_each_get_their_own_session(app, engine, user):
    barrier = threading.Barrier(CONCURRENT)
    results: list[Any] = [None] * CONCURRENT

    def log_in(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        results[i] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=log_in, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [status for status, _ in results] == [200] * CONCURRENT, results
    refresh_tokens = {body["refresh_token"] for _, body in results}
    assert len(refresh_tokens) == CONCURRENT

    with engine.connect() as conn:
        sessions = conn.execute(select(AuthSession.id)).scalars().all()
        per_session = conn.execute(select(RefreshToken.session_id)).scalars().all()
        logged = (
            conn.execute(
                select(SecurityEvent.session_id).where(SecurityEvent.type == "login_succeeded")
            )
            .scalars()
            .all()
        )
        issued = conn.execute(
            select(RefreshToken.session_id).where(
                RefreshToken.token_hash.in_([hash_token(t) for t in refresh_tokens])
            )
        ).all()
    assert len(sessions) == CONCURRENT + 1  # and the registration's
    assert sorted(per_session) == sorted(sessions)  # exactly one token each
    assert sorted(logged) == sorted(sessions)  # one event each
    assert len({session_id for (session_id,) in issued}) == CONCURRENT


def test_the_fast_write_is_all_or_nothing(app, engine, user):
    """A failing INSERT (the token's unique hash, a missing user) leaves none of the three
    rows: one statement on PostgreSQL, one transaction on SQLite."""
    fast = fast_path(engine)
    info, password_hash = _user_info(engine)
    with engine.connect() as conn:
        taken = conn.execute(select(RefreshToken.token_hash)).scalar_one()
    now = datetime.now(UTC)
    attempts = [
        # the session row alone would insert; the token's unique hash refuses the rest
        ({"user_id": info.id, "token_hash": taken, "verified_hash": password_hash}, True),
        # no such account: nothing is written (nor could be: foreign keys hold)
        ({"user_id": uuid.uuid4(), "token_hash": hash_token("x"), "verified_hash": "x"}, False),
        # the password changed since it was checked: nothing is written
        ({"user_id": info.id, "token_hash": hash_token("y"), "verified_hash": "stale"}, False),
    ]
    for attempt, raises in attempts:
        session_id = uuid.uuid4()
        write = functools.partial(
            fast.start_session,
            session_id=session_id,
            now=now,
            expires_at=now + timedelta(days=7),
            absolute_expires_at=now + timedelta(days=30),
            ip_address=None,
            user_agent=None,
            event_type="login_succeeded",
            **attempt,
        )
        if raises:
            with pytest.raises(IntegrityError):
                write()
        else:
            assert write() is False
        assert _written_by_login(engine, session_id) == {
            "sessions": [],
            "refresh_tokens": [],
            "security_events": [],
        }
    # The connection went back to the pool usable; the next login works.
    client = app.test_client()
    response = client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200


class _Recording:
    def __init__(self, connection: Any, statements: list[str]) -> None:
        self._connection = connection
        self._statements = statements

    def execute(self, statement: str, *parameters: Any) -> Any:
        self._statements.append(" ".join(statement.split()))
        return self._connection.execute(statement, *parameters)

    def execute_prepared(self, statement: Any, values: Any) -> Any:  # PostgreSQL
        self._statements.append(" ".join(statement.text.split()))
        return self._connection.execute_prepared(statement, values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_a_login_is_two_statements_on_postgresql(client, engine, backend, user, monkeypatch):
    """No ORM session, no BEGIN or COMMIT on PostgreSQL: the lookup and the write."""
    through_driver: list[str] = []
    through_sqlalchemy: list[str] = []
    driver_connection = fastpath.driver_connection

    @contextmanager
    def recording(engine: Any, **options: Any) -> Iterator[_Recording]:
        with driver_connection(engine, **options) as connection:
            yield _Recording(connection, through_driver)

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        through_sqlalchemy.append(statement)

    def begin(conn):  # type: ignore[no-untyped-def]
        through_sqlalchemy.append("BEGIN")

    monkeypatch.setattr(fastpath, "driver_connection", recording)
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "begin", begin)
    try:
        response = client.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "begin", begin)
    assert response.status_code == 200
    assert through_sqlalchemy == []
    verbs = [statement.split(None, 2)[:2] for statement in through_driver]
    if backend == "postgresql":
        assert verbs == [["SELECT", "id,"], ["WITH", "verified"]], through_driver
        assert through_driver[1].count("INSERT INTO") == 3
        assert "FOR SHARE" in through_driver[1]  # the hash checked holds until the commit
    else:
        assert verbs == [
            ["SELECT", "id,"],
            ["BEGIN", "IMMEDIATE"],
            ["SELECT", "id"],  # the hash checked is still the account's
            ["INSERT", "INTO"],
            ["INSERT", "INTO"],
            ["INSERT", "INTO"],
            ["COMMIT"],
        ], through_driver


def test_the_email_lookup_uses_the_unique_index(engine, backend, user):
    fast = fast_path(engine)
    statement = fast._credentials
    parameters = {"email": "alice@example.com"}
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(
                row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            )
            assert "uq_users_email" in plan, plan
        else:
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            )
            assert "sqlite_autoindex_users" in plan or "uq_users_email" in plan, plan
        conn.rollback()
    found = fast.credentials("alice@example.com")
    assert found is not None and found.user.email == "alice@example.com"
    assert found.password_hash.startswith("$argon2id$")
    assert fast.credentials("nobody@example.com") is None
    # Users are found by the stored, normalised form only (login normalises first).
    assert fast.credentials("ALICE@example.com") is None


def test_a_login_racing_a_password_change_writes_nothing(app, engine, user):
    """The password was checked, then a reset or change starts writing the new hash before
    the login writes its session: the login waits for it (PostgreSQL: FOR SHARE on the
    account row; SQLite: the writer queue), sees the new hash and writes nothing, so the
    reset's "end every session" cannot have missed it."""
    rt = app.extensions["authsvc"]
    info, verified = _user_info(engine)
    with make_session_factory(engine)() as reset:
        begin_write(reset)  # as a reset does: on SQLite this holds the writer queue
        reset.execute(
            update(User).where(User.id == info.id).values(password_hash="changed meanwhile")
        )
        outcome: list[Any] = []

        def log_in() -> None:
            try:
                outcome.append(
                    start_login_session(
                        fast_path(engine), rt, info, verified, CLIENT, datetime.now(UTC)
                    )
                )
            except Exception as exc:
                outcome.append(exc)

        login = threading.Thread(target=log_in)
        login.start()
        login.join(timeout=0.5)
        assert login.is_alive(), outcome  # it waits for the uncommitted change
        reset.commit()
    login.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], InvalidCredentials), outcome
    with engine.connect() as conn:
        sessions = conn.execute(select(AuthSession.id).where(AuthSession.user_id == info.id)).all()
    assert len(sessions) == 1  # only the one `register` made
