"""A retry within the grace window gets the same successor back; when it comes from another
IP or user agent than the rotation it repeats, it is recorded as `refresh_token_replayed`,
and with REFRESH_REUSE_GRACE_BIND it counts as reuse."""

from __future__ import annotations

from conftest import PASSWORD, bearer

PHONE = {"User-Agent": "phone app 1.0"}
ELSEWHERE = {"User-Agent": "curl/8.0"}


def _refresh(client, token, headers, peer="192.0.2.10"):
    return client.post(
        "/api/auth/refresh",
        json={"refresh_token": token},
        headers=headers,
        environ_base={"REMOTE_ADDR": peer},
    )


def _event_types(client, access_token):
    response = client.get("/api/auth/events", headers=bearer(access_token))
    assert response.status_code == 200
    return [event["type"] for event in response.get_json()]


def _start(client):
    response = client.post(
        "/api/auth/register",
        json={"email": "grace@example.com", "password": PASSWORD},
        headers=PHONE,
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    )
    assert response.status_code == 201
    return response.get_json()


def test_a_retry_by_the_same_client_is_silent(client):
    pair = _start(client)
    first = _refresh(client, pair["refresh_token"], PHONE)
    retry = _refresh(client, pair["refresh_token"], PHONE)
    assert retry.status_code == 200
    assert retry.get_json()["refresh_token"] == first.get_json()["refresh_token"]
    assert "refresh_token_replayed" not in _event_types(client, retry.get_json()["access_token"])


def test_a_replay_from_elsewhere_is_recorded_and_still_served(client):
    pair = _start(client)
    first = _refresh(client, pair["refresh_token"], PHONE)
    for headers, peer in ((ELSEWHERE, "192.0.2.10"), (PHONE, "198.51.100.7")):
        replay = _refresh(client, pair["refresh_token"], headers, peer)
        assert replay.status_code == 200
        assert replay.get_json()["refresh_token"] == first.get_json()["refresh_token"]
    events = client.get(
        "/api/auth/events", headers=bearer(first.get_json()["access_token"])
    ).get_json()
    replayed = [e for e in events if e["type"] == "refresh_token_replayed"]
    assert [(e["user_agent"], e["ip_address"]) for e in replayed] == [
        ("phone app 1.0", "198.51.100.7"),
        ("curl/8.0", "192.0.2.10"),
    ]


def test_bound_grace_treats_a_replay_from_elsewhere_as_reuse(make_app):
    app = make_app(REFRESH_REUSE_GRACE_BIND=True)
    client = app.test_client()
    pair = _start(client)
    first = _refresh(client, pair["refresh_token"], PHONE)
    same = _refresh(client, pair["refresh_token"], PHONE)
    assert same.status_code == 200  # the owner's own retry still works
    replay = _refresh(client, pair["refresh_token"], ELSEWHERE)
    assert replay.status_code == 401
    assert replay.get_json()["code"] == "refresh_token_reused"
    # The whole session ended: the successor the owner holds is dead too.
    assert _refresh(client, first.get_json()["refresh_token"], PHONE).status_code == 401
    login = client.post(
        "/api/auth/login", json={"email": "grace@example.com", "password": PASSWORD}
    )
    types = _event_types(client, login.get_json()["access_token"])
    assert "refresh_token_replayed" in types and "refresh_token_reused" in types
