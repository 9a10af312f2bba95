"""Opt-in (`pytest -m plans`): EXPLAIN proves the refresh path and the bearer lookup use
indexes, never a table scan.

The statements are the ones the services really issue: each test records what a request
sends to the database (SQL and bound parameters, as the driver gets them), then asks the
database for the plan of every statement that touches users, sessions or refresh_tokens.
The caller has many other sessions and a long chain of spent tokens, as in production, so
that an index on the wrong column (user_id, session_id) is a visibly worse plan.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, inspect, select

from authsvc.models import AuthSession, RefreshToken
from authsvc.security.tokens import hash_token, new_token
from conftest import bearer

pytestmark = pytest.mark.plans

WATCHED_TABLES = ("refresh_tokens", "sessions", "users")
CROWD = 300  # other sessions of the user (one live token each)
CHAIN = 20  # spent tokens before the live one in the caller's session
_WATCHED = re.compile(r"\b(refresh_tokens|sessions|users)\b")
_SQLITE_PLAN = re.compile(
    r"^(?P<op>SCAN|SEARCH) (?:TABLE )?(?P<table>\w+)(?: AS \w+)?"
    r"(?: USING (?P<covering>COVERING )?(?:INDEX (?P<index>\w+)|(?P<pk>(?:INTEGER )?PRIMARY KEY)))?"
    r"(?: \((?P<cond>.*)\))?"
)


@dataclass(frozen=True)
class Access:
    """How a plan reads one table: through `index` with `condition`, or all of it (None)."""

    table: str
    index: str | None
    condition: str


@contextmanager
def recorded_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Every DML statement sent through `engine` meanwhile, with its driver-level parameters."""
    statements: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH") and _WATCHED.search(statement):
            statements.append((statement, parameters[0] if executemany else parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _sqlite_accesses(conn: Any, statement: str, parameters: Any) -> list[Access]:
    accesses = []
    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters):
        detail = row[-1]
        match = _SQLITE_PLAN.match(detail)
        if match is None or match["table"] not in WATCHED_TABLES:
            continue
        # SCAN reads the whole table (or, "USING COVERING INDEX", the whole index).
        if match["op"] == "SCAN":
            accesses.append(Access(match["table"], None, detail))
        else:
            index = match["index"] or match["pk"]
            accesses.append(Access(match["table"], index, match["cond"] or ""))
    return accesses


def _postgres_accesses(conn: Any, statement: str, parameters: Any) -> list[Access]:
    (plan,) = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).one()
    if isinstance(plan, str):
        plan = json.loads(plan)
    accesses: list[Access] = []

    def walk(node: dict[str, Any], heap_relation: str | None) -> None:
        relation = node.get("Relation Name") or heap_relation
        kind = node["Node Type"]
        if relation in WATCHED_TABLES:
            if kind == "Seq Scan":
                accesses.append(Access(relation, None, node.get("Filter", "")))
            elif "Index Name" in node:
                accesses.append(Access(relation, node["Index Name"], node.get("Index Cond", "")))
        # A Bitmap Index Scan names its index; the Bitmap Heap Scan above it names the table.
        child_relation = node.get("Relation Name") if kind == "Bitmap Heap Scan" else None
        for child in node.get("Plans", []):
            walk(child, child_relation)

    walk(plan[0]["Plan"], None)
    return accesses


def plans(engine: Any, backend: str, statements: list[tuple[str, Any]]) -> list[Access]:
    """The table accesses of every recorded statement's plan (nothing is executed)."""
    accesses: list[Access] = []
    # A transaction even on PostgreSQL's autocommit engine, for SET LOCAL.
    options = {"isolation_level": "READ COMMITTED"} if backend == "postgresql" else {}
    with engine.connect().execution_options(**options) as conn:
        if backend == "postgresql":
            # The test tables hold a few hundred rows at most (users: one), and for a table of
            # a page or two a sequential scan *is* the cheapest plan, so the planner would
            # pick it and prove nothing about production sizes. With seq scans priced out,
            # the plan uses the best index that fits the statement; if none fits,
            # PostgreSQL still has to scan, and the assertions below catch it.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in statements:
            if backend == "postgresql":
                accesses += _postgres_accesses(conn, statement, parameters)
            else:
                accesses += _sqlite_accesses(conn, statement, parameters)
        conn.rollback()
    return accesses


def assert_no_table_scans(accesses: list[Access]) -> None:
    scans = [a for a in accesses if a.index is None]
    assert not scans, f"table scans: {scans}"


def assert_looks_up(accesses: list[Access], table: str, column: str) -> None:
    """Some access reads `table` through an index whose condition is on `column`."""
    # SQLite prints "(token_hash=?)", PostgreSQL "((token_hash)::text = '…'::text)".
    pattern = re.compile(rf"\b{column}\b[):\w]*\s*=")
    assert any(a.table == table and a.index and pattern.search(a.condition) for a in accesses), (
        f"no index lookup of {table}.{column} in {accesses}"
    )


@pytest.fixture
def crowded_user(engine, backend, user):
    """`user`, with CROWD other sessions (one live token each) and CHAIN spent tokens
    before the live one in its own session: a production-like spread of values."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        user_id, session_id = conn.execute(
            select(RefreshToken.user_id, RefreshToken.session_id).where(
                RefreshToken.token_hash == hash_token(user["refresh_token"])
            )
        ).one()
        others = [uuid.uuid4() for _ in range(CROWD)]
        conn.execute(
            insert(AuthSession.__table__),
            [
                {
                    "id": other,
                    "user_id": user_id,
                    "created_at": now,
                    "last_used_at": now,
                    "expires_at": now + timedelta(days=7),
                    "absolute_expires_at": now + timedelta(days=30),
                }
                for other in others
            ],
        )
        spent = now - timedelta(minutes=1)
        conn.execute(
            insert(RefreshToken.__table__),
            [
                {
                    "user_id": user_id,
                    "session_id": owner,
                    "token_hash": hash_token(new_token()),
                    "created_at": spent,
                    "expires_at": now + timedelta(days=7),
                    "spent_at": spent if owner == session_id else None,
                }
                for owner in [*others, *[session_id] * CHAIN]
            ],
        )
    if backend == "postgresql":
        # Statistics for the planner. (SQLite is left without: with no sqlite_stat1 it
        # plans for large tables, as production's are; statistics of these small ones
        # would also steer the other tests' plans.)
        with engine.begin() as conn:
            for table in WATCHED_TABLES:
                conn.exec_driver_sql(f"ANALYZE {table}")
    return user


def test_rotation_uses_indexes(client, engine, backend, crowded_user):
    user = crowded_user
    with recorded_statements(engine) as statements:
        response = client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert response.status_code == 200
    # One short transaction: spend the token, renew the session, insert the successor.
    assert len(statements) == 3, [s for s, _ in statements]
    accesses = plans(engine, backend, statements)
    assert_no_table_scans(accesses)
    assert_looks_up(accesses, "refresh_tokens", "token_hash")
    assert_looks_up(accesses, "sessions", "id")
    assert_looks_up(accesses, "users", "id")


def test_retry_within_grace_uses_indexes(client, engine, backend, crowded_user):
    user = crowded_user
    first = client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert first.status_code == 200
    with recorded_statements(engine) as statements:
        retry = client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert retry.status_code == 200
    assert retry.get_json()["refresh_token"] == first.get_json()["refresh_token"]
    accesses = plans(engine, backend, statements)
    assert_no_table_scans(accesses)
    assert_looks_up(accesses, "refresh_tokens", "token_hash")
    assert_looks_up(accesses, "sessions", "id")


def test_reuse_revocation_uses_indexes(client, engine, backend, crowded_user):
    user = crowded_user
    spent = user["refresh_token"]
    second = client.post("/api/auth/refresh", json={"refresh_token": spent})
    assert second.status_code == 200
    third = client.post(
        "/api/auth/refresh", json={"refresh_token": second.get_json()["refresh_token"]}
    )
    assert third.status_code == 200
    with recorded_statements(engine) as statements:
        reuse = client.post("/api/auth/refresh", json={"refresh_token": spent})
    assert reuse.status_code == 401
    assert reuse.get_json()["code"] == "refresh_token_reused"
    accesses = plans(engine, backend, statements)
    assert_no_table_scans(accesses)
    assert_looks_up(accesses, "refresh_tokens", "token_hash")
    assert_looks_up(accesses, "refresh_tokens", "session_id")
    assert_looks_up(accesses, "sessions", "id")


def test_bearer_lookup_is_one_indexed_statement(client, engine, backend, crowded_user):
    user = crowded_user
    with recorded_statements(engine) as statements:
        response = client.get("/api/auth/me", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    assert len(statements) == 1, [s for s, _ in statements]
    accesses = plans(engine, backend, statements)
    assert_no_table_scans(accesses)
    assert_looks_up(accesses, "sessions", "id")
    assert_looks_up(accesses, "users", "id")


def test_logout_finds_the_token_by_index(client, engine, backend, crowded_user):
    user = crowded_user
    with recorded_statements(engine) as statements:
        response = client.post("/api/auth/logout", json={"refresh_token": user["refresh_token"]})
    assert response.status_code == 204
    accesses = plans(engine, backend, statements)
    assert_no_table_scans(accesses)
    assert_looks_up(accesses, "refresh_tokens", "token_hash")


def test_rotation_changes_no_indexed_session_column(engine, backend):
    # A rotation sets these on its session; were any indexed, PostgreSQL could not update
    # the row in place (HOT) and would add an entry to every index of the table each time.
    indexed = {
        c for index in inspect(engine).get_indexes("sessions") for c in index["column_names"]
    }
    assert not indexed & {"last_used_at", "expires_at", "ip_address", "user_agent"}
    if backend == "postgresql":
        with engine.connect() as conn:
            options = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = 'sessions'"
            ).scalar_one()
        assert "fillfactor=80" in (options or [])
