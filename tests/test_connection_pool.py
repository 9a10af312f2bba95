"""DATABASE_POOL_SIZE bounds the connections a worker opens, however many threads serve."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import PASSWORD


def _post(url: str, body: dict) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def _me(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


@pytest.mark.slow
def test_a_worker_never_holds_more_connections_than_the_pool(
    backend, live_server, fresh_database_url
):
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to count connections on")
    server = live_server(
        workers=1, threads=8, DATABASE_URL=fresh_database_url, DATABASE_POOL_SIZE=2
    )
    status, pair = _post(
        f"{server.url}/api/auth/register", {"email": "pool@example.com", "password": PASSWORD}
    )
    assert status == 201
    database = make_url(fresh_database_url).database
    watcher = create_engine(make_url(fresh_database_url).set(database="postgres"))
    peak = 0

    def count() -> int:
        with watcher.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db"), {"db": database}
            ).scalar_one()

    with ThreadPoolExecutor(16) as pool:
        calls = [
            pool.submit(_me, f"{server.url}/api/auth/me", pair["access_token"]) for _ in range(400)
        ]
        while not all(call.done() for call in calls):
            peak = max(peak, count())
        assert {call.result() for call in calls} == {200}
    watcher.dispose()
    assert 1 <= peak <= 2
