"""Rotation under real concurrency: threads in one process, and a multi-worker gunicorn.

Whatever the interleaving, one refresh token presented many times at once must leave its
session with exactly one live successor, and every request that succeeds must get that
same successor (the grace window makes the losers' retries safe)."""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from authsvc.models import AuthSession, RefreshToken, User
from conftest import PASSWORD

CONCURRENT = 24


def live_chain(engine):
    with engine.connect() as conn:
        return conn.execute(
            select(RefreshToken.token_hash).where(
                RefreshToken.spent_at.is_(None), RefreshToken.revoked.is_(False)
            )
        ).all()


def run_together(count, action):
    """Run `action(i)` in `count` threads released at the same instant; return the results."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def worker(i):
        barrier.wait()
        results[i] = action(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def assert_single_successor(results, engine):
    statuses = [status for status, _ in results]
    assert 500 not in statuses
    assert statuses == [200] * len(results), statuses
    successors = {body["refresh_token"] for _, body in results}
    assert len(successors) == 1
    live = live_chain(engine)
    assert len(live) == 1
    return successors.pop()


def test_concurrent_refresh_in_threads(app, user, engine):
    token = user["refresh_token"]
    for _ in range(3):  # several rounds: each round's winner is the next round's input

        def refresh(_i, token=token):
            response = app.test_client().post("/api/auth/refresh", json={"refresh_token": token})
            return response.status_code, response.get_json()

        token = assert_single_successor(run_together(CONCURRENT, refresh), engine)


def test_concurrent_registration_of_one_email(app, engine):
    def register(i):
        response = app.test_client().post(
            "/api/auth/register", json={"email": "race@example.com", "password": PASSWORD}
        )
        return response.status_code

    statuses = run_together(12, register)
    assert sorted(statuses) == [201] + [409] * 11
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(User)).scalar_one() == 1


def post_json(url, path, payload):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(
            "POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.slow
def test_concurrent_refresh_against_gunicorn_workers(live_server, engine):
    server = live_server(workers=4, threads=2)
    status, pair = post_json(
        server.url, "/api/auth/register", {"email": "multi@example.com", "password": PASSWORD}
    )
    assert status == 201
    token = pair["refresh_token"]
    for _ in range(3):
        parts = urlsplit(server.url)
        connections = [
            http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            for _ in range(CONCURRENT)
        ]
        for conn in connections:
            conn.connect()  # connected before the barrier: requests then race for real

        def refresh(i, token=token, connections=connections):
            conn = connections[i]
            try:
                conn.request(
                    "POST",
                    "/api/auth/refresh",
                    body=json.dumps({"refresh_token": token}),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                return response.status, json.loads(response.read())
            finally:
                conn.close()

        token = assert_single_successor(run_together(CONCURRENT, refresh), engine)
    # The chain's single live token still works, and only one session exists.
    status, _ = post_json(server.url, "/api/auth/refresh", {"refresh_token": token})
    assert status == 200
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuthSession)).scalar_one() == 1


@pytest.mark.slow
def test_reuse_racing_rotation_never_leaves_a_live_token(live_server, engine, clock):
    """An attacker replays a spent token while the owner rotates the live one: whatever
    wins, the session must end with no usable token if reuse was detected."""
    server = live_server(workers=4, threads=2, REFRESH_REUSE_GRACE=0)
    status, pair = post_json(
        server.url, "/api/auth/register", {"email": "thief@example.com", "password": PASSWORD}
    )
    stolen = pair["refresh_token"]
    status, pair = post_json(server.url, "/api/auth/refresh", {"refresh_token": stolen})
    assert status == 200
    current = pair["refresh_token"]

    def race(i):
        token = stolen if i % 2 else current
        return post_json(server.url, "/api/auth/refresh", {"refresh_token": token})

    results = run_together(16, race)
    statuses = [status for status, _ in results]
    assert 500 not in statuses
    codes = {body.get("code") for status, body in results if status != 200}
    assert "refresh_token_reused" in codes
    # Reuse was detected, so nothing of the session may still refresh.
    for status, body in results:
        if status == 200:
            again, _ = post_json(
                server.url, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}
            )
            assert again == 401
    with engine.connect() as conn:
        assert conn.execute(select(AuthSession.revoked_at)).scalar_one() is not None
