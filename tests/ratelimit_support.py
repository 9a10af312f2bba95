"""Shared by the rate-limit and throttle tests: the Redis they use and a per-test key prefix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conftest import PASSWORD

REDIS_URL = "redis://127.0.0.1:6379/0"
WRONG = "not the password at all"


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A prefix no other test (or concurrent test run) uses; its Redis keys go afterwards."""
    prefix = f"authsvc-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def login(client: Any, email: str, password: str = WRONG, ip: str = "198.51.100.7", **kw: Any):
    return client.post(
        "/api/auth/login",
        json={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": ip},
        **kw,
    )


def assert_rate_limited(response: Any) -> int:
    """A 429 problem+json rate_limited with a sane Retry-After; returns that many seconds."""
    assert response.status_code == 429, response.get_json()
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "rate_limited"
    assert problem["status"] == 429
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


__all__ = ["PASSWORD", "REDIS_URL", "WRONG", "assert_rate_limited", "key_prefix", "login"]
