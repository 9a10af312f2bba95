"""Per-client rate limits count per network: an IPv6 client by its /64 (RATELIMIT_IPV6_PREFIX),
an IPv4-mapped IPv6 address as the IPv4 address it is. Sessions and events keep the full
address. TRUSTED_PROXY_HOPS=1 lets each request name its client in X-Forwarded-For."""

from __future__ import annotations

import pytest
from ratelimit_support import PASSWORD, assert_rate_limited, key_prefix, login
from sqlalchemy import select

from authsvc.models import AuthSession, SecurityEvent

__all__ = ["key_prefix"]  # the fixture, imported for pytest

PROXY = "10.0.0.2"


@pytest.fixture
def per_ip(make_app, key_prefix):
    """A login limit of 2/minute per client network, behind one trusted proxy."""

    def factory(**settings):
        return make_app(
            RATELIMIT_ENABLED=True,
            RATELIMIT_KEY_PREFIX=key_prefix,
            TRUSTED_PROXY_HOPS=1,
            RATELIMIT_LOGIN_PER_IP="2/minute",
            RATELIMIT_LOGIN_PER_ACCOUNT="",
            **settings,
        ).test_client()

    return factory


def attempt(client, client_address, email="x@example.com", password="not the password"):
    return login(client, email, password, ip=PROXY, headers={"X-Forwarded-For": client_address})


def test_addresses_in_one_ipv6_64_share_one_allowance(per_ip):
    client = per_ip()
    assert attempt(client, "2001:db8:1:2::1").status_code == 401
    assert attempt(client, "2001:db8:1:2::2").status_code == 401
    assert_rate_limited(attempt(client, "2001:db8:1:2:ffff:ffff:ffff:fffe"))
    # The next /64 is another subscriber.
    assert attempt(client, "2001:db8:1:3::1").status_code == 401


def test_the_ipv6_prefix_is_configurable(per_ip):
    client = per_ip(RATELIMIT_IPV6_PREFIX=128)
    for host in range(1, 5):
        assert attempt(client, f"2001:db8:1:2::{host}").status_code == 401
    wide = per_ip(RATELIMIT_IPV6_PREFIX=48)
    assert attempt(wide, "2001:db8:1:2::1").status_code == 401
    assert attempt(wide, "2001:db8:1:ff::1").status_code == 401
    assert_rate_limited(attempt(wide, "2001:db8:1:abcd::1"))


@pytest.mark.parametrize(
    "spellings",
    [
        ("198.51.100.5", "::ffff:198.51.100.5", "::ffff:c633:6405"),
        ("::ffff:198.51.100.5", "198.51.100.5", "198.51.100.5"),
    ],
)
def test_an_ipv4_mapped_address_is_the_ipv4_address(per_ip, spellings):
    client = per_ip()
    first, second, third = spellings
    assert attempt(client, first).status_code == 401
    assert attempt(client, second).status_code == 401
    assert_rate_limited(attempt(client, third))


def test_the_login_backoff_counts_per_network(make_app, key_prefix, user):
    """Five failures from five addresses of one /64 use up that network's free attempts."""
    client = make_app(
        RATELIMIT_ENABLED=True,
        RATELIMIT_KEY_PREFIX=key_prefix,
        TRUSTED_PROXY_HOPS=1,
        RATELIMIT_LOGIN_PER_IP="",
        RATELIMIT_LOGIN_PER_ACCOUNT="",
    ).test_client()
    for host in range(1, 6):
        assert attempt(client, f"2001:db8:7:7::{host}", "alice@example.com").status_code == 401
    assert_rate_limited(attempt(client, "2001:db8:7:7::99", "alice@example.com"))
    # A network the account signed in from skips the account-wide backoff, the /64 alike.
    assert attempt(client, "2001:db8:9:9::1", "alice@example.com", PASSWORD).status_code == 200
    for host in range(2, 7):
        attempt(client, f"2001:db8:8:{host}::1", "alice@example.com")
    assert attempt(client, "2001:db8:9:9::abc", "alice@example.com", PASSWORD).status_code == 200


def test_events_and_sessions_keep_the_full_address(per_ip, engine):
    client = per_ip()
    full = "2001:db8:1:2:aaaa:bbbb:cccc:dddd"
    response = attempt(client, full, "new@example.com", PASSWORD)  # unknown: a failure event
    assert response.status_code == 401
    registered = client.post(
        "/api/auth/register",
        json={"email": "new@example.com", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": PROXY},
        headers={"X-Forwarded-For": full},
    )
    assert registered.status_code == 201
    with engine.connect() as conn:
        assert conn.execute(select(AuthSession.ip_address)).scalar_one() == full
        assert set(conn.execute(select(SecurityEvent.ip_address)).scalars()) == {full}
