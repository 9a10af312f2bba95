"""Brute-force protection: growing delays after failed logins for an account, reset by a
success, bounded so that a stranger cannot keep the owner out, on memory and on Redis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from ratelimit_support import (
    PASSWORD,
    REDIS_URL,
    assert_rate_limited,
    key_prefix,
    login,
)

from authsvc.errors import RateLimited
from authsvc.services.throttle import (
    LoginThrottle,
    MemoryThrottleStore,
    RedisThrottleStore,
    ThrottlePolicy,
    delay_after,
)

__all__ = ["key_prefix"]  # the fixture, imported for pytest

ATTACKER = "198.51.100.66"


@pytest.fixture(params=["memory", "redis"])
def storage(request) -> str:
    return "memory://" if request.param == "memory" else REDIS_URL


@pytest.fixture
def throttled(make_app, key_prefix, storage):
    """An app with the login throttle on and the flask-limiter login limits off."""
    app = make_app(
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=storage,
        RATELIMIT_KEY_PREFIX=key_prefix,
        RATELIMIT_LOGIN_PER_IP="",
        RATELIMIT_LOGIN_PER_ACCOUNT="",
    )
    return app.test_client()


def fail_until_delayed(client, clock, failures: int, ip: str, email="alice@example.com"):
    """Make `failures` wrong guesses from `ip`, each after waiting as long as told to."""
    waits = []
    made = 0
    while made < failures:
        response = login(client, email, ip=ip)
        if response.status_code == 429:
            waits.append(assert_rate_limited(response))
            clock.advance(waits[-1])
        else:
            assert response.status_code == 401, response.get_json()
            made += 1
    return waits


def test_delay_grows_with_each_failure_and_a_success_resets_it(throttled, user, clock):
    for _ in range(5):  # the free attempts
        assert login(throttled, "alice@example.com").status_code == 401
    waits = []
    for _ in range(4):
        waits.append(assert_rate_limited(login(throttled, "alice@example.com")))
        clock.advance(waits[-1])
        assert login(throttled, "alice@example.com").status_code == 401
    assert waits == [1, 2, 4, 8]
    # While the account cools down even the right password waits (no oracle for guesses).
    assert assert_rate_limited(login(throttled, "alice@example.com", PASSWORD)) == 16
    clock.advance(16)
    assert login(throttled, "alice@example.com", PASSWORD).status_code == 200
    # The success reset the count: five free attempts again, then 1 s.
    for _ in range(5):
        assert login(throttled, "alice@example.com").status_code == 401
    assert assert_rate_limited(login(throttled, "alice@example.com")) == 1


def test_unknown_emails_are_throttled_the_same_way(throttled, clock):
    for _ in range(5):
        assert login(throttled, "nobody@example.com").status_code == 401
    assert assert_rate_limited(login(throttled, "nobody@example.com")) == 1


def test_a_stranger_cannot_keep_the_owner_out(throttled, user, clock):
    home = "203.0.113.10"
    assert login(throttled, "alice@example.com", PASSWORD, ip=home).status_code == 200
    waits = fail_until_delayed(throttled, clock, 25, ATTACKER)
    assert max(waits) == 900  # the attacker's own lane is capped at LOGIN_THROTTLE_MAX_DELAY
    # From an address the owner has not logged in from: held back by 36 s at most.
    elsewhere = login(throttled, "alice@example.com", PASSWORD, ip="192.0.2.44")
    assert 1 <= assert_rate_limited(elsewhere) <= 36
    # From the address the owner logged in from before: no wait at all.
    assert login(throttled, "alice@example.com", PASSWORD, ip=home).status_code == 200
    # The attacker still waits out its own delay.
    assert assert_rate_limited(login(throttled, "alice@example.com", ip=ATTACKER)) > 36


def test_failures_per_hour_per_account_stay_near_one_hundred(throttled, user, clock):
    """An attacker using a fresh address for every guess, always waiting as told."""
    per_hour = [0, 0]
    elapsed = 0.0
    attempt = 0
    while elapsed < 7200:
        attempt += 1
        ip = f"10.{attempt // 65536 % 256}.{attempt // 256 % 256}.{attempt % 256}"
        response = login(throttled, "alice@example.com", ip=ip)
        if response.status_code == 429:
            wait = assert_rate_limited(response)
            clock.advance(wait)
            elapsed += wait
        else:
            assert response.status_code == 401
            per_hour[int(elapsed // 3600)] += 1
    # 10 free, a doubling ramp, then one guess per 36 s: 114 in the first hour, 100 after.
    assert per_hour[0] <= 115
    assert per_hour[1] <= 101


def test_delay_schedule():
    assert [delay_after(n, 5, 900) for n in range(1, 8)] == [0, 0, 0, 0, 1, 2, 4]
    assert delay_after(40, 5, 900) == 900
    policy = ThrottlePolicy(free_attempts=5, max_delay=900, account_hourly=100)
    assert policy.account_free_attempts == 10
    assert policy.account_max_delay == 36


@pytest.fixture
def throttle(storage, key_prefix):
    if storage.startswith("redis"):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        yield LoginThrottle(RedisThrottleStore(client), ThrottlePolicy(), key_prefix)
        client.close()
    else:
        yield LoginThrottle(MemoryThrottleStore(), ThrottlePolicy(), key_prefix)


def test_parallel_attempts_get_one_turn(throttle):
    """Once delays apply, requests fired at once cannot all slip through one opening."""
    keys = throttle.keys("alice@example.com", ATTACKER)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for _ in range(5):
        throttle.check(keys, start)
        throttle.failed(keys, start)
    later = datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC)  # past the 1 s wait
    allowed: list[bool] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        try:
            throttle.check(keys, later)
        except RateLimited:
            allowed.append(False)
        else:
            allowed.append(True)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1
    # An attempt that ended neither way (say, the database was down) gives its turn back.
    throttle.release(keys)
    throttle.check(keys, later)


def test_change_password_guesses_are_throttled_like_logins(throttled, user):
    """A stolen access token must not turn change-password into a fast password oracle."""
    headers = {"Authorization": f"Bearer {user['access_token']}"}
    statuses = []
    for _ in range(8):
        response = throttled.post(
            "/api/auth/change-password",
            json={
                "current_password": "wrong guess number x",
                "new_password": "a new passphrase ok",
            },
            headers=headers,
        )
        statuses.append((response.status_code, response.get_json().get("code")))
        if response.status_code == 429:
            assert_rate_limited(response)
            break
    assert statuses[:5] == [(401, "invalid_credentials")] * 5
    assert statuses[-1] == (429, "rate_limited")
