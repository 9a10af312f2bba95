"""The hot paths' own connections (`db.driver_connection`): one per thread, closed when the
thread ends or the engine is disposed, so that short-lived threads cannot pile connections
up until the database refuses new ones."""

from __future__ import annotations

import gc
import threading

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from authsvc import db
from conftest import bearer

THREADS = 30


def _server_connections(engine, backend):
    if backend != "postgresql":
        return None
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend'"
            )
        ).scalar_one()


def _open_hot_connections(engine):
    connections = db._thread_connections.get(engine)
    return 0 if connections is None else len(connections._open)


def test_each_thread_uses_its_own_connection_and_it_closes_with_the_thread(
    app, client, engine, backend, user
):
    client.get("/api/auth/me", headers=bearer(user["access_token"]))  # this thread's own
    before_hot = _open_hot_connections(engine)
    before_server = _server_connections(engine, backend)
    seen: list[int] = []
    answers: list[int] = []
    barrier = threading.Barrier(THREADS)

    def call() -> None:
        with app.test_client() as own:
            barrier.wait()  # all alive at once: each needs a connection of its own
            answers.append(
                own.get("/api/auth/me", headers=bearer(user["access_token"])).status_code
            )
            with db.driver_connection(engine) as connection:
                seen.append(id(connection))
            barrier.wait()  # none has ended yet, so no connection's id can be reused

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * THREADS
    assert len(set(seen)) == THREADS  # no two threads shared a connection

    del threads
    gc.collect()
    assert _open_hot_connections(engine) == before_hot
    if backend == "postgresql":
        assert _server_connections(engine, backend) <= before_server


def test_disposing_the_engine_closes_every_hot_connection(make_app, backend, user):
    other = make_app()
    engine = other.extensions["authsvc_db"][0]
    assert (
        other.test_client().get("/api/auth/me", headers=bearer(user["access_token"])).status_code
        == 200
    )
    assert _open_hot_connections(engine) == 1
    engine.dispose()
    assert _open_hot_connections(engine) == 0


def test_a_failing_prepared_statement_raises_the_servers_error_and_keeps_the_connection(
    engine, backend
):
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's hot paths use the DBAPI cursor")
    statement = db.Statement("authsvc_test_divide", "SELECT 1 / %(n)s::int", {"n": "text"})
    with db.driver_connection(engine) as conn:
        held = conn
    with pytest.raises(DBAPIError) as failed, db.driver_connection(engine) as conn:
        conn.execute_prepared(statement, [0])
    assert isinstance(failed.value.orig, psycopg.errors.DivisionByZero)
    assert not failed.value.connection_invalidated
    with db.driver_connection(engine) as conn:
        assert conn is held  # a statement's error does not cost the thread its connection
        result = conn.execute_prepared(statement, [1])
        assert int.from_bytes(result.get_value(0, 0), "big") == 1


def test_prepared_statement_values_are_sent_as_postgresql_reads_them(engine, backend):
    statement = db.Statement(
        "authsvc_test_values",
        "SELECT %(flag)s::bool, %(word)s::text, %(none)s::text IS NULL",
        {"flag": "bool", "word": "text", "none": "text"},
    )
    assert statement.dump([True, "ünïcode", None]) == [b"t", "ünïcode".encode(), None]
    assert statement.dump([False, "", None])[0] == b"f"
    with pytest.raises(ValueError, match="NUL"):  # libpq would cut the text at the NUL
        statement.dump([True, "before\x00after", None])
    if backend != "postgresql":
        return
    with db.driver_connection(engine) as conn:
        for flag in (True, False):
            result = conn.execute_prepared(statement, [flag, "ünïcode", None])
            assert result.get_value(0, 0) == (b"\x01" if flag else b"\x00")
            assert db.binary_text(result.get_value(0, 1)) == "ünïcode"
            assert result.get_value(0, 2) == b"\x01"
