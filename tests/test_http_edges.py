"""HTTP as a reverse proxy or a hostile client speaks it to a real gunicorn: malformed chunked
bodies are 4xx, a refused body never leaves a kept-alive connection that the server then
drops, paths are never redirected to a host the request named, and a NUL in a client id is
a 401 on every database."""

from __future__ import annotations

import base64
import socket

import pytest

from conftest import bearer

POST_ROUTES = [
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/logout-all",
    "/api/auth/forgot-password",
    "/api/auth/reset-password",
    "/api/auth/change-password",
    "/api/auth/introspect",
]

MALFORMED_CHUNKED = {
    "bad chunk size": b"zz\r\n{}\r\n0\r\n\r\n",
    "missing CRLF after a chunk": b"2\r\n{}XX0\r\n\r\n",
    "truncated": b'10\r\n{"email": ',
}


class Connection:
    """One kept-alive HTTP/1.1 connection, spoken by hand."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a response")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed inside a response")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()


def _request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body and "Transfer_Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def server(live_server):
    return live_server(workers=1, threads=2)


@pytest.mark.slow
def test_malformed_chunked_bodies_are_4xx_on_every_post_route(server):
    for path in POST_ROUTES:
        for name, body in MALFORMED_CHUNKED.items():
            conn = Connection(server.port)
            try:
                conn.send(
                    _request(
                        "POST",
                        path,
                        body,
                        Content_Type="application/json",
                        Transfer_Encoding="chunked",
                    )
                )
                if name == "truncated":
                    conn.sock.shutdown(socket.SHUT_WR)
                status, headers, _ = conn.response()
            finally:
                conn.close()
            assert 400 <= status < 500, (path, name, status)
            assert headers["content-type"] == "application/problem+json", (path, name)
            assert headers["connection"] == "close", (path, name)


@pytest.mark.slow
def test_a_refused_body_is_drained_and_the_connection_kept(server):
    """A proxy reusing its upstream connection after a 413 (the body was sent in full)."""
    conn = Connection(server.port)
    try:
        big = b'{"email": "' + b"a" * 200_000 + b'"}'
        conn.send(_request("POST", "/api/auth/login", big, Content_Type="application/json"))
        status, headers, _ = conn.response()
        assert status == 413
        assert headers["connection"] == "keep-alive"
        conn.send(_request("GET", "/healthz"))  # the next request on it is answered
        assert conn.response()[0] == 200
    finally:
        conn.close()


@pytest.mark.slow
def test_a_body_too_large_to_drain_closes_the_connection_and_says_so(server):
    conn = Connection(server.port)
    try:
        huge = b'{"email": "' + b"a" * 3_000_000 + b'"}'
        conn.send(_request("POST", "/api/auth/login", huge, Content_Type="application/json"))
        status, headers, _ = conn.response()
        assert status == 413
        assert headers["connection"] == "close"
        assert conn.closed_by_server()
    finally:
        conn.close()


@pytest.mark.slow
def test_small_refused_bodies_keep_the_connection(server):
    conn = Connection(server.port)
    try:
        for body, expected in [(b"{bad", 400), (b"email=a", 415), (b"{}", 422)]:
            content_type = "text/html" if expected == 415 else "application/json"
            conn.send(_request("POST", "/api/auth/login", body, Content_Type=content_type))
            status, headers, _ = conn.response()
            assert status == expected
            assert headers["connection"] == "keep-alive"
        conn.send(_request("GET", "/healthz"))
        assert conn.response()[0] == 200
    finally:
        conn.close()


@pytest.mark.slow
def test_a_valid_chunked_body_is_read(server):
    conn = Connection(server.port)
    try:
        payload = b'{"refresh_token": "unknown"}'
        chunked = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
        conn.send(
            _request(
                "POST",
                "/api/auth/logout",
                chunked,
                Content_Type="application/json",
                Transfer_Encoding="chunked",
            )
        )
        assert conn.response()[0] == 204
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/api/auth//me", "//api/auth/me", "/api//auth/me/"])
def test_paths_are_not_redirected_to_the_requests_host(client, user, path):
    response = client.get(path, headers={"Host": "evil.example", **bearer(user["access_token"])})
    assert not 300 <= response.status_code < 400, response.headers
    assert "Location" not in response.headers
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


@pytest.mark.slow
def test_no_redirect_over_the_wire_either(server):
    conn = Connection(server.port)
    try:
        conn.send(b"GET /api/auth//me HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        status, headers, _ = conn.response()
    finally:
        conn.close()
    assert status == 404
    assert "location" not in headers


@pytest.mark.parametrize("client_id", ["svc\x00x", "svc%00x", "\x00"])
def test_a_nul_in_the_basic_client_id_is_401(client, user, client_id):
    credentials = base64.b64encode(f"{client_id}:secret".encode()).decode()
    response = client.post(
        "/api/auth/introspect",
        data={"token": user["access_token"]},
        headers={"Authorization": f"Basic {credentials}"},
    )
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_client"
