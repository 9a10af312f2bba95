"""Two gunicorn instances (separate masters, separate ports) on one database and one Redis
behave as one service: one rotation chain, logouts, key rotation and rate limits all shared."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ratelimit_support import REDIS_URL, key_prefix  # noqa: F401  (a fixture)
from sqlalchemy import select

from authsvc.models import RefreshToken
from conftest import PASSWORD, ROOT, LiveServer, server_env

pytestmark = pytest.mark.slow

CONCURRENT = 24


def call(
    server: LiveServer,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Any]:
    """One request; (status, parsed JSON body or None)."""
    parts = urlsplit(server.url)
    own = conn is None
    conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        if own:
            conn.close()


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def kid_of(token: str) -> str:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["kid"]


@pytest.fixture
def two_instances(live_server: Callable[..., LiveServer]) -> Callable[..., list[LiveServer]]:
    """Two gunicorn masters with the same settings: two_instances(**settings)."""

    def start(**settings: Any) -> list[LiveServer]:
        return [live_server(workers=2, threads=2, **settings) for _ in range(2)]

    return start


def register(server: LiveServer, email: str = "fleet@example.com") -> dict[str, Any]:
    status, pair = call(
        server, "POST", "/api/auth/register", {"email": email, "password": PASSWORD}
    )
    assert status == 201, pair
    return pair


def login(server: LiveServer, email: str = "fleet@example.com") -> dict[str, Any]:
    status, pair = call(server, "POST", "/api/auth/login", {"email": email, "password": PASSWORD})
    assert status == 200, pair
    return pair


def refresh_at_once(servers: list[LiveServer], token: str) -> list[tuple[int, Any]]:
    """CONCURRENT refreshes of one token, alternating between the instances, released at
    the same instant on connections opened beforehand (so that they race for real)."""
    connections = []
    for i in range(CONCURRENT):
        parts = urlsplit(servers[i % 2].url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        conn.connect()
        connections.append(conn)
    barrier = threading.Barrier(CONCURRENT)
    results: list[Any] = [None] * CONCURRENT

    def refresh(i: int) -> None:
        barrier.wait()
        body = {"refresh_token": token}
        results[i] = call(servers[i % 2], "POST", "/api/auth/refresh", body, conn=connections[i])

    threads = [threading.Thread(target=refresh, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for conn in connections:
        conn.close()
    return results


def test_concurrent_refreshes_over_two_instances_leave_one_chain(two_instances, engine):
    servers = two_instances()
    pair = register(servers[0])
    token = pair["refresh_token"]
    for _ in range(3):  # each round's successor is the next round's input
        results = refresh_at_once(servers, token)
        assert [status for status, _ in results] == [200] * CONCURRENT, results
        successors = {body["refresh_token"] for _, body in results}
        assert len(successors) == 1  # the losers got the winner's successor (grace retries)
        with engine.connect() as conn:
            live = conn.execute(
                select(RefreshToken.id).where(
                    RefreshToken.spent_at.is_(None), RefreshToken.revoked.is_(False)
                )
            ).all()
        assert len(live) == 1  # never two chains
        token = successors.pop()
    status, sessions = call(servers[1], "GET", "/api/auth/sessions", token=pair["access_token"])
    assert status == 200
    assert len(sessions) == 1
    assert call(servers[1], "POST", "/api/auth/refresh", {"refresh_token": token})[0] == 200


def test_logout_all_on_one_instance_is_refused_on_the_other_at_once(two_instances):
    first, second = two_instances()
    pair = register(first)
    other_device = login(second)
    for server in (first, second):
        for tokens in (pair, other_device):
            assert call(server, "GET", "/api/auth/me", token=tokens["access_token"])[0] == 200

    status, body = call(first, "POST", "/api/auth/logout-all", token=pair["access_token"])
    assert (status, body) == (200, {"revoked_sessions": 2})
    for tokens in (pair, other_device):
        status, problem = call(second, "GET", "/api/auth/me", token=tokens["access_token"])
        assert status == 401, problem
        status, _ = call(
            second, "POST", "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]}
        )
        assert status == 401


def test_a_session_ended_on_one_instance_is_refused_on_the_other_at_once(two_instances):
    first, second = two_instances()
    laptop = register(first)
    phone = login(second)
    assert call(second, "GET", "/api/auth/me", token=phone["access_token"])[0] == 200

    phone_sid = claims_of(phone["access_token"])["sid"]
    status, _ = call(
        first, "DELETE", f"/api/auth/sessions/{phone_sid}", token=laptop["access_token"]
    )
    assert status == 204
    status, problem = call(second, "GET", "/api/auth/me", token=phone["access_token"])
    assert status == 401, problem
    assert call(second, "GET", "/api/auth/me", token=laptop["access_token"])[0] == 200

    # And logging out with the refresh token on one ends it on the other.
    status, _ = call(second, "POST", "/api/auth/logout", {"refresh_token": laptop["refresh_token"]})
    assert status == 204
    assert call(first, "GET", "/api/auth/me", token=laptop["access_token"])[0] == 401


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    return None


def test_keys_rotate_reaches_both_instances_without_a_restart(
    two_instances, make_app, fresh_database_url, base_config
):
    # A database of its own: the rotation must not reach the rest of the suite's apps.
    make_app(DATABASE_URL=fresh_database_url)  # its first signing key, as `make run` would
    settings = {"DATABASE_URL": fresh_database_url, "JWT_KEYS_RELOAD_INTERVAL": 1}
    first, second = two_instances(**settings)
    before = register(first)
    old_kid = kid_of(before["access_token"])

    flask = Path(sys.executable).parent / "flask"
    rotated = subprocess.run(
        [str(flask), "--app", "wsgi", "keys", "rotate", "--prepublish", "2"],
        cwd=ROOT,
        env=server_env(base_config, **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split("key ", 1)[1].split(";")[0]
    assert new_kid != old_kid

    for server in (first, second):
        pair = wait_until(lambda server=server: kid_of(login(server)["access_token"]) == new_kid)
        assert pair, f"{server.url} still signs with {old_kid}"
    # Tokens of both generations verify on both instances.
    after = login(second)
    for server in (first, second):
        for tokens in (before, after):
            assert call(server, "GET", "/api/auth/me", token=tokens["access_token"])[0] == 200


def test_rate_limits_count_requests_to_both_instances(two_instances, key_prefix):  # noqa: F811
    first, second = two_instances(
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=REDIS_URL,
        RATELIMIT_KEY_PREFIX=key_prefix,
        RATELIMIT_LOGIN_PER_IP="4/minute",
        RATELIMIT_LOGIN_PER_ACCOUNT="",
    )
    wrong = {"password": "not the password at all"}
    statuses = [
        call(server, "POST", "/api/auth/login", {"email": f"u{i}@example.com", **wrong})[0]
        for i, server in enumerate((first, second, first, second))
    ]
    assert statuses == [401] * 4  # two each: neither instance alone is at its limit
    for server in (first, second):
        status, problem = call(
            server, "POST", "/api/auth/login", {"email": "late@example.com", **wrong}
        )
        assert status == 429, problem
        assert problem["code"] == "rate_limited"
