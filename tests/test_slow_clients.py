"""Half-sent requests do not take the service down: bare gunicorn drops a connection that goes
quiet mid-request (GUNICORN_READ_TIMEOUT), and behind deploy/nginx.conf gunicorn never sees one."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, ROOT, free_port, stop_process

pytestmark = pytest.mark.slow

STALLED = 5  # more than the server's 4 threads
# Far beyond what an answer takes here, far below "forever": the stalls never end by themselves.
PATIENCE = 20.0


def _half_requests(host: str) -> list[bytes]:
    """Requests cut off in their headers and in their body (shorter than its Content-Length)."""
    headers_cut = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: slow".encode()
    body = json.dumps({"email": "slow@example.com", "password": PASSWORD}).encode()
    body_cut = (
        f"POST /api/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) + 100}\r\n\r\n"
    ).encode() + body
    return [headers_cut, body_cut, headers_cut, body_cut, headers_cut]


def _stall(port: int, data: bytes, tls: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        sock = _insecure_tls().wrap_socket(sock, server_hostname="localhost")
    sock.sendall(data)
    return sock


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


def _get(url: str, timeout: float = PATIENCE, **kwargs: Any) -> tuple[int, float, bytes]:
    started = time.monotonic()
    request = urllib.request.Request(url, **kwargs)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_insecure_tls()) as resp:
            return resp.status, time.monotonic() - started, resp.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, time.monotonic() - started, error.read()


def test_bare_gunicorn_frees_a_thread_from_a_client_that_stalls(live_server):
    server = live_server(workers=1, threads=4, GUNICORN_READ_TIMEOUT=2)
    stalled = [_stall(server.port, data) for data in _half_requests("localhost")]
    try:
        time.sleep(0.5)  # every half request is in, and has a thread waiting for the rest
        status, elapsed, _ = _get(f"{server.url}/healthz")
        assert status == 200
        assert elapsed < PATIENCE
        # Each stalled request ends: a cut-off body with a 400, cut-off headers with the
        # connection closed, none kept waiting for the rest.
        for sock, data in zip(stalled, _half_requests("localhost"), strict=True):
            sock.settimeout(PATIENCE)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            if data.startswith(b"POST"):
                assert received.startswith(b"HTTP/1.1 400 "), received[:200]
            else:
                assert received == b""
    finally:
        for sock in stalled:
            sock.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _substitute(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count, f"deploy/nginx.conf no longer has {pattern!r}"
    return new


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """deploy/nginx.conf with this test's ports, certificate, pid file, temp paths and logs,
    run in the foreground by its own master process (the system's nginx is never touched)."""

    def __init__(self, binary: str, directory: Path, upstream_port: int) -> None:
        self.https_port, self.http_port = free_port(), free_port()
        cert, key = _self_signed(directory)
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        site = _substitute(
            site, r"^(\s*server) 127\.0\.0\.1:8000;", rf"\1 127.0.0.1:{upstream_port};"
        )
        site = _substitute(site, r"^\s*listen \[::\]:\d+.*;\n", "")
        site = _substitute(site, r"^(\s*listen) 80;", rf"\1 127.0.0.1:{self.http_port};")
        site = _substitute(site, r"^(\s*listen) 443 ssl;", rf"\1 127.0.0.1:{self.https_port} ssl;")
        site = _substitute(site, r"^(\s*ssl_certificate) \S+;", rf"\1 {cert};")
        site = _substitute(site, r"^(\s*ssl_certificate_key) \S+;", rf"\1 {key};")
        (directory / "authsvc.conf").write_text(site)
        temp = {
            name: directory / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        }
        for path in temp.values():
            path.mkdir()
        user = "user root;" if os.geteuid() == 0 else ""  # workers that may use tmp_path
        main = f"""
daemon off;
{user}
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory / "access.log"};
    {" ".join(f"{name}_temp_path {path};" for name, path in temp.items())}
    include {directory / "authsvc.conf"};
}}
"""
        (directory / "nginx.conf").write_text(main)
        self.directory = directory
        command = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")]
        command += ["-e", str(directory / "error.log")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"https://127.0.0.1:{self.https_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not listen within 30 s")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int], Nginx]]:
    binary = _nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    started: list[Nginx] = []

    def start(upstream_port: int) -> Nginx:
        proxy = Nginx(binary, tmp_path, upstream_port)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def test_behind_nginx_stalled_clients_never_reach_gunicorn(live_server, nginx):
    # gunicorn's own read timeout is off: nginx alone keeps the threads free.
    server = live_server(workers=1, threads=4, TRUSTED_PROXY_HOPS=1, GUNICORN_READ_TIMEOUT=0)
    proxy = nginx(server.port)
    stalled = [_stall(proxy.https_port, data, tls=True) for data in _half_requests("localhost")]
    try:
        time.sleep(0.5)
        for _ in range(3):
            status, elapsed, _ = _get(f"{proxy.url}/healthz")
            assert status == 200
            assert elapsed < 5  # promptly: no queue behind the stalled clients

        # Bodies go through whole; the client address is the one nginx saw, not a claim.
        body = json.dumps({"email": "proxied@example.com", "password": PASSWORD}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"}
        status, _, raw = _get(
            f"{proxy.url}/api/auth/register", data=body, headers=headers, method="POST"
        )
        assert status == 201, raw
        token = json.loads(raw)["access_token"]
        status, _, raw = _get(
            f"{proxy.url}/api/auth/sessions", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200
        assert [s["ip_address"] for s in json.loads(raw)] == ["127.0.0.1"]

        # Bodies over MAX_CONTENT_LENGTH stop at nginx, with authsvc's problem shape.
        big = b'{"email": "' + b"a" * (64 * 1024) + b'"}'
        status, _, raw = _get(
            f"{proxy.url}/api/auth/login", data=big, headers=headers, method="POST"
        )
        assert status == 413
        assert json.loads(raw)["code"] == "payload_too_large"

        # Plain HTTP only redirects to HTTPS.
        request = urllib.request.Request(f"http://127.0.0.1:{proxy.http_port}/healthz")
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(request, timeout=PATIENCE)
        with redirect.value as response:
            assert response.code == 308
            assert response.headers["Location"].startswith("https://")
    finally:
        for sock in stalled:
            sock.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
