"""`keys revoke` reaches every worker within 2 s: each worker compares the key set's version
with the database's at most once a second, without waiting for the full reload
(JWT_KEYS_RELOAD_INTERVAL, an hour here)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from test_keys import kid_of, post_json, run_cli

from conftest import PASSWORD


def me_status(url: str, token: str) -> int:
    request = urllib.request.Request(
        f"{url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_a_revoked_key_is_refused_by_every_worker_within_two_seconds(
    live_server, make_app, fresh_database_url
):
    settings = {"DATABASE_URL": fresh_database_url, "JWT_KEYS_RELOAD_INTERVAL": 3600}
    operator = make_app(**settings)  # the CLI, on the same database
    server = live_server(workers=2, threads=2, **settings)
    pair = post_json(
        server.url, "/api/auth/register", {"email": "leak@example.com", "password": PASSWORD}
    )
    # Every worker has verified (and cached) the token: one connection per request.
    assert {me_status(server.url, pair["access_token"]) for _ in range(12)} == {200}

    run_cli(operator, "keys", "rotate", "--prepublish", "0")
    run_cli(operator, "keys", "revoke", "--yes", kid_of(pair["access_token"]))
    time.sleep(2.0)

    statuses = [me_status(server.url, pair["access_token"]) for _ in range(12)]
    assert statuses == [401] * 12
    # The service goes on with the new key.
    fresh = post_json(
        server.url, "/api/auth/login", {"email": "leak@example.com", "password": PASSWORD}
    )
    assert kid_of(fresh["access_token"]) != kid_of(pair["access_token"])
    assert me_status(server.url, fresh["access_token"]) == 200
