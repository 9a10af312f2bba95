"""Rate limits per client IP and per account (flask-limiter): 429 problem+json with
Retry-After, memory or Redis storage, shared across instances and gunicorn workers."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ratelimit_support import REDIS_URL, WRONG, assert_rate_limited, key_prefix, login

from conftest import PASSWORD, free_port

__all__ = ["key_prefix"]  # the fixture, imported for pytest

NO_ACCOUNT_LIMITS = {
    "RATELIMIT_LOGIN_PER_ACCOUNT": "",
    "RATELIMIT_REGISTER_PER_ACCOUNT": "",
    "RATELIMIT_REFRESH_PER_TOKEN": "",
}


@pytest.fixture
def limited(make_app, key_prefix):
    """make_app with rate limits on (each test names the ones it exercises)."""

    def factory(**settings):
        return make_app(RATELIMIT_ENABLED=True, RATELIMIT_KEY_PREFIX=key_prefix, **settings)

    return factory


def test_login_is_limited_per_client_ip(limited):
    client = limited(RATELIMIT_LOGIN_PER_IP="3/minute", **NO_ACCOUNT_LIMITS).test_client()
    for i in range(3):
        assert login(client, f"user{i}@example.com").status_code == 401
    retry_after = assert_rate_limited(login(client, "user9@example.com"))
    assert retry_after <= 60
    # Another address has its own allowance.
    assert login(client, "user9@example.com", ip="198.51.100.8").status_code == 401


def test_login_is_limited_per_account_across_addresses(limited, user):
    client = limited(
        RATELIMIT_LOGIN_PER_IP="", RATELIMIT_LOGIN_PER_ACCOUNT="3/minute"
    ).test_client()
    spellings = ["alice@example.com", "  Alice@Example.COM", "ALICE@example.com "]
    for i, email in enumerate(spellings):
        assert login(client, email, ip=f"203.0.113.{i + 1}").status_code == 401
    # The fourth try, from yet another address and even with the right password: refused.
    assert_rate_limited(login(client, "alice@example.com", PASSWORD, ip="203.0.113.99"))
    # Other accounts are not affected.
    assert login(client, "bob@example.com", ip="203.0.113.99").status_code == 401


def test_register_is_limited_per_ip_and_per_account(limited):
    client = limited(
        RATELIMIT_REGISTER_PER_IP="3/minute", RATELIMIT_REGISTER_PER_ACCOUNT="2/hour"
    ).test_client()

    def register(email, ip="198.51.100.7"):
        return client.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD},
            environ_base={"REMOTE_ADDR": ip},
        )

    assert register("alice@example.com").status_code == 201
    assert register("ALICE@example.com", ip="198.51.100.20").status_code == 409
    assert_rate_limited(register("alice@example.com", ip="198.51.100.21"))  # per account
    assert register("bob@example.com").status_code == 201
    assert register("carol@example.com").status_code == 201
    assert_rate_limited(register("dave@example.com"))  # the fourth from one address


def test_refresh_is_limited_per_token(limited, register):
    pair = register()
    client = limited(
        RATELIMIT_REFRESH_PER_IP="", RATELIMIT_REFRESH_PER_TOKEN="2/minute"
    ).test_client()
    body = {"refresh_token": pair["refresh_token"]}
    first = client.post("/api/auth/refresh", json=body)
    assert first.status_code == 200
    retry = client.post("/api/auth/refresh", json=body)  # a retry within the grace window
    assert retry.status_code == 200
    assert retry.get_json()["refresh_token"] == first.get_json()["refresh_token"]
    assert_rate_limited(client.post("/api/auth/refresh", json=body))
    # The successor is a different token with its own allowance.
    successor = {"refresh_token": first.get_json()["refresh_token"]}
    assert client.post("/api/auth/refresh", json=successor).status_code == 200


def test_refresh_is_limited_per_ip(limited):
    client = limited(
        RATELIMIT_REFRESH_PER_IP="2/minute", RATELIMIT_REFRESH_PER_TOKEN=""
    ).test_client()
    for i in range(2):
        response = client.post("/api/auth/refresh", json={"refresh_token": f"unknown-{i}"})
        assert response.status_code == 401
    assert_rate_limited(client.post("/api/auth/refresh", json={"refresh_token": "unknown-3"}))


def test_malformed_bodies_count_against_the_address(limited):
    client = limited(RATELIMIT_LOGIN_PER_IP="2/minute").test_client()
    bad = [
        client.post("/api/auth/login", data=b"{not json", content_type="application/json"),
        client.post("/api/auth/login", json={"email": 5, "password": []}),
    ]
    assert [r.status_code for r in bad] == [400, 422]
    assert_rate_limited(client.post("/api/auth/login", json=["a list"]))


@pytest.mark.parametrize("hops", [0, 1])
def test_the_address_limited_is_the_one_trusted_proxies_report(limited, hops):
    client = limited(
        RATELIMIT_LOGIN_PER_IP="2/minute", TRUSTED_PROXY_HOPS=hops, **NO_ACCOUNT_LIMITS
    ).test_client()

    def attempt(forwarded_for):
        return login(
            client, "x@example.com", ip="10.0.0.2", headers={"X-Forwarded-For": forwarded_for}
        )

    assert attempt("203.0.113.1").status_code == 401
    assert attempt("203.0.113.1").status_code == 401
    assert_rate_limited(attempt("203.0.113.1"))
    # A different forwarded address: a different client behind a trusted proxy, but only a
    # forged header when nothing is trusted (the peer is still the one that is limited).
    fresh = attempt("203.0.113.2")
    if hops:
        assert fresh.status_code == 401
    else:
        assert_rate_limited(fresh)


def test_disabled_limits_never_answer_429(make_app, user):
    client = make_app(RATELIMIT_ENABLED=False, RATELIMIT_LOGIN_PER_IP="1/minute").test_client()
    statuses = {login(client, "alice@example.com").status_code for _ in range(25)}
    assert statuses == {401}  # no per-IP limit, no per-account delay
    assert login(client, "alice@example.com", PASSWORD).status_code == 200


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"RATELIMIT_ENABLED": False}, "RATELIMIT_ENABLED=false"),
        ({"RATELIMIT_ENABLED": True}, "RATELIMIT_STORAGE_URI=memory://"),
    ],
)
def test_production_warns_about_weak_rate_limiting(make_app, settings, expected):
    records = _Records()
    logger = logging.getLogger("authsvc.limits")
    logger.addHandler(records)
    try:
        make_app(
            AUTHSVC_ENV="production",
            JWT_ALGORITHM="HS256",
            JWT_SECRET="s" * 32,
            FRONTEND_URL="https://app.example.org",
            PUBLIC_URL="https://auth.example.org",
            **settings,
        )
    finally:
        logger.removeHandler(records)
    assert any(expected in message for message in records.messages), records.messages


def test_limits_hold_across_instances_sharing_redis(limited):
    settings = {
        "RATELIMIT_STORAGE_URI": REDIS_URL,
        "RATELIMIT_LOGIN_PER_IP": "3/minute",
        **NO_ACCOUNT_LIMITS,
    }
    first, second = limited(**settings).test_client(), limited(**settings).test_client()
    assert login(first, "a@example.com").status_code == 401
    assert login(second, "b@example.com").status_code == 401
    assert login(first, "c@example.com").status_code == 401
    assert_rate_limited(login(second, "d@example.com"))
    assert_rate_limited(login(first, "d@example.com"))


def test_unreachable_redis_degrades_to_per_process_limits(limited, caplog):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    client = limited(
        RATELIMIT_STORAGE_URI=closed, RATELIMIT_LOGIN_PER_IP="2/minute", **NO_ACCOUNT_LIMITS
    ).test_client()
    statuses = [login(client, f"u{i}@example.com").status_code for i in range(3)]
    assert statuses[:2] == [401, 401]  # answered, not 500/503
    assert_rate_limited(login(client, "u9@example.com"))


def _post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@pytest.mark.slow
def test_limit_holds_across_two_gunicorn_workers_sharing_redis(live_server, key_prefix, tmp_path):
    access_log = tmp_path / "access.log"
    server = live_server(
        workers=2,
        threads=1,
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=REDIS_URL,
        RATELIMIT_KEY_PREFIX=key_prefix,
        RATELIMIT_LOGIN_PER_IP="6/minute",
        RATELIMIT_LOGIN_PER_ACCOUNT="",
        GUNICORN_ACCESS_LOG=str(access_log),
    )
    statuses: list[int] = []

    def attempt(i: int) -> int:
        status, headers = _post_json(
            f"{server.url}/api/auth/login", {"email": f"w{i}@example.com", "password": WRONG}
        )
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
        return status

    # Bursts of parallel connections until both workers (the second may still be importing
    # the app when the first answers) have answered some of them.
    deadline = time.monotonic() + 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len(_pids(access_log)) < 2 and time.monotonic() < deadline:
            statuses += pool.map(attempt, range(len(statuses), len(statuses) + 8))
            time.sleep(0.2)
    assert len(_pids(access_log)) == 2, "both workers must have served requests"
    assert statuses.count(401) == 6  # six in all, not six per worker
    assert statuses.count(429) == len(statuses) - 6


def _pids(access_log: Path) -> set[int]:
    if not access_log.exists():
        return set()
    lines = [json.loads(line) for line in access_log.read_text().splitlines() if line.strip()]
    return {line["pid"] for line in lines if line.get("path") == "/api/auth/login"}


def test_forgot_password_is_limited_per_account_and_per_ip(limited, user):
    client = limited(
        RATELIMIT_FORGOT_PASSWORD_PER_IP="3/minute", RATELIMIT_FORGOT_PASSWORD_PER_ACCOUNT="2/hour"
    ).test_client()

    def forgot(email, ip="198.51.100.7"):
        return client.post(
            "/api/auth/forgot-password", json={"email": email}, environ_base={"REMOTE_ADDR": ip}
        )

    assert forgot("alice@example.com").status_code == 202
    assert forgot("Alice@Example.com", ip="198.51.100.8").status_code == 202
    # No mail bombing: the third request for one account waits, from any address.
    assert_rate_limited(forgot("alice@example.com", ip="198.51.100.9"))
    # Unknown accounts are limited alike (the answer must not tell them apart).
    assert forgot("nobody@example.com").status_code == 202
    assert forgot("nobody2@example.com").status_code == 202
    assert_rate_limited(forgot("nobody3@example.com"))  # the fourth from one address


def test_reset_password_is_limited_per_ip(limited):
    client = limited(RATELIMIT_RESET_PASSWORD_PER_IP="2/minute").test_client()
    body = {"token": "not-a-real-token", "new_password": "a brand new passphrase"}
    for _ in range(2):
        assert client.post("/api/auth/reset-password", json=body).status_code == 400
    assert_rate_limited(client.post("/api/auth/reset-password", json=body))
