"""`python -m bench.table_growth`: refresh latency as `refresh_tokens` grows, and purge time.

On a scratch PostgreSQL database (made on the BENCH_DATABASE_URL / TEST_DATABASE_URL server,
default postgresql+psycopg://postgres@127.0.0.1:5432/test, dropped afterwards):

1. fills `refresh_tokens` to 10 thousand, 100 thousand, then 1 million rows with set-based
   SQL (INSERT … SELECT … FROM generate_series; ten tokens per session, sessions spread
   over a thousand users; every filler row expired 30 days ago, as in a table nobody purges);
2. after each size (and a VACUUM ANALYZE and CHECKPOINT, as autovacuum and the
   checkpointer would have run on a table that grew by itself), times a few hundred
   sequential rotations of one live session through the real app (Flask test client →
   view → `rotate_refresh_token` → PostgreSQL), in three batches, and prints p50/p99 of
   the least disturbed batch (the lowest p50) and the slowest rotation of all, then the
   plan of the rotation statement (EXPLAIN only);
3. times the real purge code (`services.maintenance.purge`, default retention and batch
   size) deleting the million expired rows, while another thread keeps rotating that live
   session, and prints the rotations' latency during the purge.

Not a test: nothing is asserted about speed. Environment: BENCH_ROTATIONS (default 300),
BENCH_SIZES (default 10000,100000,1000000). Bounded to a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from authsvc import create_app
from authsvc.config import normalise_database_url
from authsvc.db import get_session
from authsvc.services.maintenance import purge

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TOKENS_PER_SESSION = 10
FILLER_USERS = 1000
WARMUP = 30
BATCHES = 3  # per size; the batch with the lowest p50 is reported
PASSWORD = "table growth benchmark password"


def _sizes() -> list[int]:
    raw = os.environ.get("BENCH_SIZES", "10000,100000,1000000")
    return sorted(int(part) for part in raw.split(",") if part.strip())


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new database on the benchmark server, dropped afterwards (even on failure)."""
    raw = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or DEFAULT_POSTGRES
    )
    admin = make_url(normalise_database_url(raw))
    name = f"authsvc_growth_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of `samples` (seconds), in milliseconds."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index] * 1000


def fill_users(engine: Engine, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO users (id, email, name, password_hash, created_at,
                                   password_changed_at)
                SELECT md5('u' || g)::uuid, 'filler-' || g || '@example.com', NULL,
                       '!unusable', :old, :old
                FROM generate_series(0, CAST(:n AS integer) - 1) AS g
                """
            ),
            {"n": FILLER_USERS, "old": now - timedelta(days=60)},
        )


def fill_tokens(engine: Engine, first: int, last: int, now: datetime) -> None:
    """Filler tokens number `first` .. `last - 1` and their sessions, in two statements."""
    old = now - timedelta(days=37)
    params = {
        "s_first": first // TOKENS_PER_SESSION,
        "s_last": (last - 1) // TOKENS_PER_SESSION,
        "first": first,
        "last": last - 1,
        "per": TOKENS_PER_SESSION,
        "users": FILLER_USERS,
        "created": old,
        "expired": old + timedelta(days=7),
        "absolute": old + timedelta(days=30),
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at,
                                      absolute_expires_at, user_agent, ip_address)
                SELECT md5('s' || s)::uuid, md5('u' || (s % :users))::uuid, :created,
                       :created, :expired, :absolute, 'filler/1.0', '192.0.2.1'
                FROM generate_series(CAST(:s_first AS bigint), CAST(:s_last AS bigint)) AS s
                ON CONFLICT (id) DO NOTHING
                """
            ),
            params,
        )
        conn.execute(
            text(
                """
                INSERT INTO refresh_tokens (user_id, session_id, token_hash, created_at,
                                            expires_at, last_used_at, spent_at, revoked,
                                            user_agent, ip_address)
                SELECT md5('u' || ((g / :per) % :users))::uuid, md5('s' || (g / :per))::uuid,
                       encode(sha256(('filler token ' || g)::bytea), 'hex'),
                       :created, :expired, :created,
                       CASE WHEN g % :per < :per - 1 THEN :created END,  -- spent but the last
                       false, 'filler/1.0', '192.0.2.1'
                FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
                """
            ),
            params,
        )


def settle(engine: Engine) -> None:
    """What autovacuum and the checkpointer would have done by the time a table grew this
    big on its own, done now, so the burst of filling is not what the rotations measure."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) users, sessions, refresh_tokens"))
        try:
            conn.execute(text("CHECKPOINT"))
        except DBAPIError:  # needs superuser or pg_checkpoint; the run is only noisier
            print("(CHECKPOINT not allowed for this role; skipped)")


def wal_position(engine: Engine) -> int:
    """The server's WAL insert position, in bytes. After a checkpoint the first change to
    each page logs the whole page, and an index on random keys (token_hash) spreads a big
    table's inserts over many pages: the WAL per rotation shows it."""
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")).scalar_one()
        )


def rotate(client: Any, token: str) -> tuple[str, float]:
    began = time.perf_counter()
    response = client.post("/api/auth/refresh", json={"refresh_token": token})
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise RuntimeError(f"refresh failed: {response.status_code} {response.get_json()}")
    return response.get_json()["refresh_token"], elapsed


def spend_plan(engine: Engine) -> str:
    """How PostgreSQL runs the rotation statement, spend, renew and insert (EXPLAIN only:
    nothing is changed): the table accesses of its plan."""
    from authsvc.services.fastpath import _ROTATE_POSTGRESQL

    now = datetime.now(UTC)
    params = {
        "token_hash": "0" * 64,
        "successor_hash": "1" * 64,
        "sealed": b"",
        "now": now,
        "renewed": now,
        "ip_address": None,
        "user_agent": None,
    }
    with engine.connect() as conn:
        lines = conn.exec_driver_sql("EXPLAIN " + _ROTATE_POSTGRESQL, params).scalars()
        return " / ".join(line.strip(" ->") for line in lines if "Scan using" in line)


def table_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def main() -> int:
    rotations = int(os.environ.get("BENCH_ROTATIONS", 300))
    sizes = _sizes()
    print(
        f"# refresh latency vs refresh_tokens size, PostgreSQL "
        f"({platform.node()}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start)"
    )
    with scratch_database() as url, tempfile.TemporaryDirectory() as instance:
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["url"] = url
        cfg.attributes["skip_logging"] = True
        command.upgrade(cfg, "head")
        app = create_app(
            {
                "DATABASE_URL": url,
                "INSTANCE_PATH": instance,
                "RATELIMIT_ENABLED": False,
                "LOG_LEVEL": "WARNING",
            }
        )
        engine = app.extensions["authsvc_db"][0]
        try:
            with engine.connect() as conn:
                version = conn.execute(text("SHOW server_version")).scalar_one()
            print(f"PostgreSQL {version}; {rotations} sequential rotations per size\n")
            return run(app, engine, sizes, rotations)
        finally:
            engine.dispose()


def run(app: Any, engine: Engine, sizes: list[int], rotations: int) -> int:
    client = app.test_client()
    response = client.post(
        "/api/auth/register", json={"email": "alice@example.com", "password": PASSWORD}
    )
    if response.status_code != 201:
        raise RuntimeError(f"register failed: {response.get_json()}")
    token = response.get_json()["refresh_token"]
    now = datetime.now(UTC)
    fill_users(engine, now)

    print(
        "| refresh_tokens rows | fill time | refresh p50 | refresh p99 | max | WAL per rotation |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    filled = 0
    for size in sizes:
        began = time.perf_counter()
        fill_tokens(engine, filled, size, now)
        fill_seconds = time.perf_counter() - began
        settle(engine)
        filled = size
        for _ in range(WARMUP):
            token, _ = rotate(client, token)
        # In BATCHES batches: other work on a shared machine only slows a batch down, so the
        # least disturbed one (lowest p50) is the steadiest figure, as in `make bench`.
        wal_before = wal_position(engine)
        batches = []
        for _ in range(BATCHES):
            samples = []
            for _ in range(max(1, rotations // BATCHES)):
                token, elapsed = rotate(client, token)
                samples.append(elapsed)
            batches.append(samples)
        samples = min(batches, key=lambda batch: percentile(batch, 50))
        worst = max(max(batch) for batch in batches)
        timed = sum(len(batch) for batch in batches)
        wal_bytes = wal_position(engine) - wal_before
        rows = table_rows(engine, "refresh_tokens")
        print(
            f"| {rows:,} | {fill_seconds:.1f} s | {percentile(samples, 50):.2f} ms "
            f"| {percentile(samples, 99):.2f} ms | {worst * 1000:.2f} ms "
            f"| {wal_bytes / timed / 1024:.1f} KiB |",
            flush=True,
        )

    print(f"\nplan of rotation's spend at {filled:,} filler rows: {spend_plan(engine)}")

    # Purge the filler (expired 30 days ago) with the real code while the session rotates.
    stop = threading.Event()
    during: list[float] = []
    errors: list[BaseException] = []

    def keep_rotating(token: str) -> None:
        try:
            while not stop.is_set():
                token, elapsed = rotate(client, token)
                during.append(elapsed)
        except BaseException as exc:  # reported below, never swallowed
            errors.append(exc)

    rotator = threading.Thread(target=keep_rotating, args=(token,))
    before = {t: table_rows(engine, t) for t in ("refresh_tokens", "sessions")}
    rotator.start()
    began = time.perf_counter()
    try:
        with app.app_context():
            report = purge(get_session(), app.extensions["authsvc"])
    finally:
        purge_seconds = time.perf_counter() - began
        stop.set()
        rotator.join()
    if errors:
        raise errors[0]
    after = {t: table_rows(engine, t) for t in ("refresh_tokens", "sessions")}
    deleted = report.counts
    print(
        f"\npurge (default retention, batches of 1000): deleted {deleted['refresh_tokens']:,} "
        f"refresh_tokens and {deleted['sessions']:,} sessions in {report.batches:,} "
        f"transactions, {purge_seconds:.1f} s "
        f"({deleted['refresh_tokens'] / purge_seconds:,.0f} tokens/s); rows left: "
        f"{after['refresh_tokens']:,} refresh_tokens (of {before['refresh_tokens']:,}), "
        f"{after['sessions']:,} sessions"
    )
    if during:
        print(
            f"refresh during the purge: {len(during)} rotations, "
            f"p50 {percentile(during, 50):.2f} ms, p99 {percentile(during, 99):.2f} ms, "
            f"max {max(during) * 1000:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
