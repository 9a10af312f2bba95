"""Client IP and user-agent: X-Forwarded-For counts only for TRUSTED_PROXY_HOPS trusted proxies,
so a client cannot forge the address recorded on its session and its security events."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from authsvc.models import AuthSession, SecurityEvent
from conftest import PASSWORD, bearer

PEER = "203.0.113.7"  # the address the TCP connection came from
FORGED = "198.51.100.66"


def _register(client, headers=None, peer=PEER, email="alice@example.com"):
    response = client.post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD},
        headers=headers or {},
        environ_base={"REMOTE_ADDR": peer},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _recorded(engine):
    with engine.connect() as conn:
        session_ip = conn.execute(select(AuthSession.ip_address)).scalar_one()
        event_ip = conn.execute(select(SecurityEvent.ip_address)).scalar_one()
    return session_ip, event_ip


def test_forged_forwarded_for_is_ignored_without_trusted_proxies(client, engine):
    pair = _register(client, {"X-Forwarded-For": FORGED})
    assert _recorded(engine) == (PEER, PEER)
    listed = client.get("/api/auth/sessions", headers=bearer(pair["access_token"])).get_json()
    assert listed[0]["ip_address"] == PEER
    events = client.get("/api/auth/events", headers=bearer(pair["access_token"])).get_json()
    assert events[0]["ip_address"] == PEER


def test_forwarded_for_is_honoured_with_one_trusted_hop(make_app, engine):
    client = make_app(TRUSTED_PROXY_HOPS=1).test_client()
    proxy_saw = "192.0.2.10"
    # The client sent its own (forged) header; the trusted proxy appended what it saw.
    pair = _register(client, {"X-Forwarded-For": f"{FORGED}, {proxy_saw}"}, peer="10.0.0.2")
    assert _recorded(engine) == (proxy_saw, proxy_saw)
    listed = client.get("/api/auth/sessions", headers=bearer(pair["access_token"])).get_json()
    assert listed[0]["ip_address"] == proxy_saw


def test_two_trusted_hops_take_the_second_entry_from_the_right(make_app, engine):
    client = make_app(TRUSTED_PROXY_HOPS=2).test_client()
    _register(
        client,
        {"X-Forwarded-For": f"{FORGED}, 192.0.2.20", "x-forwarded-for": "10.0.0.3"},
        peer="10.0.0.4",
    )
    assert _recorded(engine) == ("192.0.2.20", "192.0.2.20")


@pytest.mark.parametrize(
    "forwarded",
    [
        None,  # a request that did not come through the proxy
        "not-an-ip",
        "198.51.100.1:8080",
        "",
        "fe80::1%" + "x" * 100,  # a scoped IPv6 address longer than the column
        "\x00",
    ],
)
def test_unusable_forwarded_for_falls_back_to_the_peer(make_app, engine, forwarded):
    client = make_app(TRUSTED_PROXY_HOPS=1).test_client()
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    _register(client, headers)
    assert _recorded(engine) == (PEER, PEER)


def test_ipv6_addresses_are_recorded_in_canonical_form(make_app, engine):
    client = make_app(TRUSTED_PROXY_HOPS=1).test_client()
    _register(client, {"X-Forwarded-For": "2001:DB8:0:0:0:0:0:1"})
    assert _recorded(engine) == ("2001:db8::1", "2001:db8::1")


def test_refresh_updates_the_session_address_from_the_real_peer(client, engine, user):
    response = client.post(
        "/api/auth/refresh",
        json={"refresh_token": user["refresh_token"]},
        headers={"X-Forwarded-For": FORGED, "User-Agent": "phone/2.0"},
        environ_base={"REMOTE_ADDR": "203.0.113.99"},
    )
    assert response.status_code == 200
    listed = client.get(
        "/api/auth/sessions", headers=bearer(response.get_json()["access_token"])
    ).get_json()
    assert (listed[0]["ip_address"], listed[0]["user_agent"]) == ("203.0.113.99", "phone/2.0")


def test_user_agent_is_truncated_to_512_characters(client, engine):
    agent = "Mozilla/5.0 " + "é" * 600
    pair = _register(client, {"User-Agent": agent})
    with engine.connect() as conn:
        stored = conn.execute(select(AuthSession.user_agent)).scalar_one()
        event_agent = conn.execute(select(SecurityEvent.user_agent)).scalar_one()
    assert stored == agent[:512]
    assert event_agent == agent[:512]
    listed = client.get("/api/auth/sessions", headers=bearer(pair["access_token"])).get_json()
    assert listed[0]["user_agent"] == agent[:512]


def test_user_agent_with_a_nul_byte_is_stored_without_it(client, engine):
    pair = _register(client, {"User-Agent": "curl/8\x00evil"})
    with engine.connect() as conn:
        assert conn.execute(select(AuthSession.user_agent)).scalar_one() == "curl/8evil"
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 200
