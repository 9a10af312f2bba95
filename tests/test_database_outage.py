"""While the database is unreachable, requests get 503 problem+json service_unavailable (no
500, no stack trace) and /readyz says 503; once it is back, both work again without a
restart. Against a real gunicorn.

PostgreSQL: the server reaches the database through a TCP proxy in this test, which is
stopped (every connection cut, the port closed) and started again. Login (the ORM session),
and the bearer check (GET /api/auth/me) and refresh-token rotation, which run hand-written
SQL on their own DBAPI connections (`db.driver_connection`), all answer 503 and recover.
SQLite has no connection to cut: the database is a file opened inside the worker, and an
open file cannot be taken away from it. Its equivalent is the database's volume being absent
(not mounted yet) and then appearing: every connection attempt fails until it does.

PostgreSQL also: pooled connections whose backends the server ended (pg_terminate_backend,
as a restart or an administrator does) are replaced on checkout, never used, so the requests
after it all succeed (no 503). In the Flask test client, on the app's own pool.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conftest import PASSWORD, alembic_config, bearer, free_port

HS256 = {"JWT_ALGORITHM": "HS256", "JWT_SECRET": "outage-test-secret-of-32-bytes-or-more"}


class TcpProxy:
    """127.0.0.1:port -> target, one thread per direction per connection; stop() closes the
    port and cuts every connection, start() opens the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)  # shutdown() first: close() alone leaves a blocked accept() running
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _call(
    url: str, body: dict | None = None, *, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """`body` as JSON (a POST), or a GET without one; `token` as the Bearer credential."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def _assert_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503, body
    assert headers["Content-Type"] == "application/problem+json"
    assert body["code"] == "service_unavailable"
    assert "Traceback" not in json.dumps(body)
    assert set(body) == {"type", "title", "status", "detail", "code"}


def _login(url: str) -> tuple[int, dict[str, str], Any]:
    return _call(f"{url}/api/auth/login", {"email": "alice@example.com", "password": PASSWORD})


def _me(url: str, access_token: str) -> tuple[int, dict[str, str], Any]:
    return _call(f"{url}/api/auth/me", token=access_token)


def _refresh(url: str, refresh_token: str) -> tuple[int, dict[str, str], Any]:
    return _call(f"{url}/api/auth/refresh", {"refresh_token": refresh_token})


@pytest.mark.slow
def test_postgresql_outage_answers_503_and_recovers_without_restart(
    backend, database_url, live_server
):
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no connection to cut (see the SQLite variant)")
    db = make_url(database_url)
    proxy = TcpProxy((db.host or "127.0.0.1", db.port or 5432))
    proxy.start()
    try:
        through_proxy = db.set(host="127.0.0.1", port=proxy.port)
        server = live_server(
            workers=2,
            threads=2,
            DATABASE_URL=through_proxy.render_as_string(hide_password=False),
            **HS256,
        )
        registered = _call(
            f"{server.url}/api/auth/register",
            {"email": "alice@example.com", "password": PASSWORD},
        )
        assert registered[0] == 201
        status, _, pair = _login(server.url)
        assert status == 200
        access_token, refresh_token = pair["access_token"], pair["refresh_token"]
        assert _me(server.url, access_token)[0] == 200
        assert _call(f"{server.url}/readyz")[0] == 200

        proxy.stop()
        for _ in range(4):  # both workers, pooled connections and new ones alike
            _assert_unavailable(*_login(server.url))
            # The hot paths, on the DBAPI connection rather than the ORM session:
            _assert_unavailable(*_me(server.url, access_token))
            _assert_unavailable(*_refresh(server.url, refresh_token))  # not spent: no database
            _assert_unavailable(*_call(f"{server.url}/readyz"))
        assert _call(f"{server.url}/healthz")[0] == 200  # the process itself is fine

        proxy.start()
        for _ in range(4):
            assert _login(server.url)[0] == 200
            assert _me(server.url, access_token)[0] == 200
            status, _, pair = _refresh(server.url, refresh_token)
            assert status == 200, pair
            refresh_token = pair["refresh_token"]
            assert _call(f"{server.url}/readyz")[0] == 200
    finally:
        proxy.stop()


_TERMINATE_OTHER_CLIENTS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND backend_type = 'client backend'
"""


def test_postgresql_connections_the_server_ended_are_replaced_not_used(
    backend, engine, client, user
):
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to end a connection")
    warmed = [engine.connect() for _ in range(4)]  # at once: four distinct pooled connections
    for connection in warmed:
        connection.close()  # back to the pool, idle, their backends alive
    # From a connection outside the app's pool, so that every pooled one is ended.
    outsider = create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with outsider.connect() as connection:
            ended = connection.execute(text(_TERMINATE_OTHER_CLIENTS)).scalars().all()
    finally:
        outsider.dispose()
    assert ended.count(True) >= len(warmed), ended  # else the test would prove nothing
    time.sleep(0.2)  # for the backends' FATAL messages to reach the pooled sockets

    access_token, refresh_token = user["access_token"], user["refresh_token"]
    for _ in range(6):  # more checkouts than ended connections in the pool, on each path
        me = client.get("/api/auth/me", headers=bearer(access_token))
        assert me.status_code == 200, me.get_json()
        refreshed = client.post("/api/auth/refresh", json={"refresh_token": refresh_token})
        assert refreshed.status_code == 200, refreshed.get_json()
        refresh_token = refreshed.get_json()["refresh_token"]
        logged_in = client.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert logged_in.status_code == 200, logged_in.get_json()


@pytest.mark.slow
def test_sqlite_missing_volume_answers_503_and_recovers_without_restart(
    backend, live_server, tmp_path
):
    if backend != "sqlite":
        pytest.skip("SQLite variant; the PostgreSQL run cuts a real connection instead")
    volume = tmp_path / "volume"  # not there yet, like an unmounted disk
    url = f"sqlite:///{volume / 'authsvc.db'}"
    server = live_server(workers=2, threads=2, DATABASE_URL=url, **HS256)
    for _ in range(4):
        _assert_unavailable(*_login(server.url))
        _assert_unavailable(*_call(f"{server.url}/readyz"))
    assert _call(f"{server.url}/healthz")[0] == 200

    volume.mkdir()
    command.upgrade(alembic_config(url), "head")
    deadline = time.monotonic() + 10
    registered = _call(
        f"{server.url}/api/auth/register", {"email": "alice@example.com", "password": PASSWORD}
    )
    assert registered[0] == 201, registered
    while time.monotonic() < deadline and _call(f"{server.url}/readyz")[0] != 200:
        time.sleep(0.1)
    for _ in range(4):
        assert _login(server.url)[0] == 200
        assert _call(f"{server.url}/readyz")[0] == 200
