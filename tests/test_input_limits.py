"""Limits on input: MAX_CONTENT_LENGTH (413, chunked bodies included), JSON only (415),
field lengths (422); and the headers every token response carries."""

from __future__ import annotations

import http.client
import io
import json

import pytest

from conftest import PASSWORD

LIMIT = 4096


def _body(size: int) -> bytes:
    """A login body of exactly `size` bytes."""
    base = json.dumps({"email": "alice@example.com", "password": ""}).encode()
    return json.dumps({"email": "alice@example.com", "password": "x" * (size - len(base))}).encode()


def _send(server, body: bytes, *, chunked: bool, content_type: str = "application/json"):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Content-Type": content_type}
        if chunked:
            # Sent in pieces with Transfer-Encoding: chunked and no Content-Length.
            pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
            connection.request(
                "POST", "/api/auth/login", body=pieces, headers=headers, encode_chunked=True
            )
        else:
            connection.request("POST", "/api/auth/login", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_size_limit_over_http(live_server, chunked):
    server = live_server(workers=1, threads=2, MAX_CONTENT_LENGTH=LIMIT)
    status, content_type, problem = _send(server, _body(LIMIT + 1), chunked=chunked)
    assert (status, content_type) == (413, "application/problem+json")
    assert problem["code"] == "payload_too_large"
    assert str(LIMIT) in problem["detail"]
    # Exactly at the limit is fine: it reaches the view (and fails as a login should).
    status, _, problem = _send(server, _body(LIMIT), chunked=chunked)
    assert status == 422  # the password is longer than any accepted one
    small = json.dumps({"email": "a@example.com", "password": PASSWORD}).encode()
    status, _, problem = _send(server, small, chunked=chunked)
    assert (status, problem["code"]) == (401, "invalid_credentials")


@pytest.mark.slow
def test_chunked_non_json_body_is_415_over_http(live_server):
    server = live_server(workers=1, threads=2)
    status, content_type, problem = _send(
        server,
        b"email=a&password=b",
        chunked=True,
        content_type="application/x-www-form-urlencoded",
    )
    assert (status, content_type, problem["code"]) == (
        415,
        "application/problem+json",
        "unsupported_media_type",
    )


def test_chunked_body_over_the_limit_with_the_test_client(make_app):
    client = make_app(MAX_CONTENT_LENGTH=LIMIT).test_client()

    def post(body: bytes):
        return client.post(
            "/api/auth/login",
            input_stream=io.BytesIO(body),
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
            environ_overrides={"wsgi.input_terminated": True},  # as gunicorn de-chunks
        )

    assert post(_body(LIMIT + 1)).status_code == 413
    assert post(_body(LIMIT)).status_code == 422


@pytest.mark.parametrize(
    ("path", "content_type", "data"),
    [
        ("/api/auth/register", "application/x-www-form-urlencoded", b"email=a&password=b"),
        ("/api/auth/refresh", "multipart/form-data; boundary=x", b"--x--"),
        ("/api/auth/login", None, b'{"email": "a@example.com", "password": "x"}'),
    ],
)
def test_non_json_bodies_are_415(client, path, content_type, data):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=data, headers=headers)
    assert response.status_code == 415
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/auth/register", {"email": "a" * 321, "password": PASSWORD}, "email"),
        (
            "/api/auth/register",
            {"email": "a@example.com", "password": PASSWORD, "name": "n" * 101},
            "name",
        ),
        ("/api/auth/register", {"email": "a@example.com", "password": "p" * 1025}, "password"),
        ("/api/auth/login", {"email": "a" * 321, "password": PASSWORD}, "email"),
        ("/api/auth/login", {"email": "a@example.com", "password": "p" * 1025}, "password"),
        ("/api/auth/refresh", {"refresh_token": "t" * 513}, "refresh_token"),
        ("/api/auth/logout", {"refresh_token": "t" * 513}, "refresh_token"),
    ],
)
def test_overlong_fields_are_422_before_any_work(client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["code"] == "validation_error"
    assert field in problem["errors"]


def test_token_responses_are_never_stored_and_carry_security_headers(client, user):
    responses = [
        client.post("/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}),
        client.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]}),
        client.post("/api/auth/login", json={"email": "alice@example.com", "password": "nope"}),
    ]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
