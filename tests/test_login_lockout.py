"""A stranger guessing one account's password from many addresses cannot lock its owner out:
the per-account login lane counts per (account, client network), the owner's known networks
skip the account-wide backoff, and that backoff still holds the account to about
LOGIN_THROTTLE_ACCOUNT_HOURLY (100) guesses an hour however often the owner signs in."""

from __future__ import annotations

import itertools

import pytest
from ratelimit_support import PASSWORD, REDIS_URL, assert_rate_limited, key_prefix, login

__all__ = ["key_prefix"]  # the fixture, imported for pytest

EMAIL = "alice@example.com"
HOME = "203.0.113.10"  # the owner's usual network
TRAVEL = "192.0.2.44"  # a network the owner has never signed in from


@pytest.fixture(params=["memory://", REDIS_URL], ids=["memory", "redis"])
def storage(request) -> str:
    return request.param


def attacker_addresses():
    for n in itertools.count(1):
        yield f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def test_rotating_attackers_cannot_keep_the_owner_out(make_app, key_prefix, storage, clock):
    # The shipped limits (RATELIMIT_LOGIN_PER_ACCOUNT=20/minute and the throttle) in force.
    client = make_app(
        RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=storage, RATELIMIT_KEY_PREFIX=key_prefix
    ).test_client()
    registered = client.post(
        "/api/auth/register",
        json={"email": EMAIL, "password": PASSWORD},
        environ_base={"REMOTE_ADDR": HOME},
    )
    assert registered.status_code == 201
    assert login(client, EMAIL, PASSWORD, ip=HOME).status_code == 200  # a known network now
    addresses = attacker_addresses()
    for _ in range(3):
        # 30 wrong guesses within the minute, each from a fresh address.
        statuses = {login(client, EMAIL, ip=next(addresses)).status_code for _ in range(30)}
        assert statuses <= {401, 429}
        assert 429 in statuses  # the attack is being slowed down...
        # ...and the owner, from the network they signed in from before, gets in every time.
        assert login(client, EMAIL, PASSWORD, ip=HOME).status_code == 200
    # From a network the owner never used: held back by the account's backoff at most
    # (3600 / LOGIN_THROTTLE_ACCOUNT_HOURLY = 36 s), then in.
    travelling = login(client, EMAIL, PASSWORD, ip=TRAVEL)
    if travelling.status_code == 429:
        assert assert_rate_limited(travelling) <= 36
        clock.advance(36)
        travelling = login(client, EMAIL, PASSWORD, ip=TRAVEL)
    assert travelling.status_code == 200
    # Now that network is known too: no wait while the attack goes on.
    for _ in range(5):
        login(client, EMAIL, ip=next(addresses))
    assert login(client, EMAIL, PASSWORD, ip=TRAVEL).status_code == 200


def test_the_owner_signing_in_often_does_not_lift_the_hourly_cap(
    make_app, key_prefix, storage, clock
):
    """An attacker using a fresh address for every guess and waiting as told, while the
    owner signs in from home every five minutes: still about 100 guesses an hour."""
    client = make_app(
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=storage,
        RATELIMIT_KEY_PREFIX=key_prefix,
        RATELIMIT_LOGIN_PER_IP="",  # flask-limiter counts real time; the throttle the clock's
        RATELIMIT_LOGIN_PER_ACCOUNT="",
    ).test_client()
    client.post("/api/auth/register", json={"email": EMAIL, "password": PASSWORD})
    addresses = attacker_addresses()
    guesses = [0, 0]
    elapsed, next_owner_login = 0.0, 0.0
    while elapsed < 7200:
        if elapsed >= next_owner_login:
            assert login(client, EMAIL, PASSWORD, ip=HOME).status_code == 200
            next_owner_login += 300
        response = login(client, EMAIL, ip=next(addresses))
        if response.status_code == 429:
            wait = min(assert_rate_limited(response), 300)
            clock.advance(wait)
            elapsed += wait
        else:
            assert response.status_code == 401
            guesses[int(elapsed // 3600)] += 1
    # 10 free, a doubling ramp, then one guess per 36 s: 114 in the first hour, 100 after.
    assert guesses[0] <= 115
    assert guesses[1] <= 101
