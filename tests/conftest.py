"""Fixtures: one migrated database per run (SQLite file, or a fresh PostgreSQL database made
from TEST_DATABASE_URL), the app, its client, a movable clock, users, and real gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url

from authsvc import create_app
from authsvc.config import normalise_database_url
from authsvc.db import Base

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
# argon2 parameters cheap enough for a test suite; production defaults are OWASP's.
CHEAP_ARGON2 = {"ARGON2_MEMORY_COST": 64, "ARGON2_TIME_COST": 1, "ARGON2_PARALLELISM": 1}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `plans` (EXPLAIN of the hot statements) run only when asked for."""
    if "plans" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="EXPLAIN checks are opt-in: pytest -m plans")
    for item in items:
        if "plans" in item.keywords:
            item.add_marker(skip)


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["skip_logging"] = True
    return cfg


def _postgres_admin_url() -> str | None:
    raw = os.environ.get("TEST_DATABASE_URL")
    return normalise_database_url(raw) if raw else None


def create_scratch_database(prefix: str) -> tuple[str, Callable[[], None]]:
    """A new, empty PostgreSQL database on the TEST_DATABASE_URL server, and its dropper.

    Each run gets its own database, so parallel runs (or a developer's and CI's) never
    trample each other and a crashed run leaves the shared one alone.
    """
    admin = make_url(_postgres_admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def backend() -> str:
    return "postgresql" if _postgres_admin_url() else "sqlite"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[str]:
    if backend == "postgresql":
        url, drop = create_scratch_database("authsvc_test")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'authsvc.db'}"
        drop = None
    command.upgrade(alembic_config(url), "head")
    yield url
    if drop:
        drop()


@pytest.fixture(scope="session")
def instance_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="session")
def base_config(database_url: str, instance_path: Path) -> dict[str, Any]:
    return {
        "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(instance_path),
        "RATELIMIT_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        **CHEAP_ARGON2,
    }


# Keys that pass the production guard's randomness check (authsvc/production.py).
STRONG_KEK = "pV7q-Lx2RmZ9tWc4KbN8yHs3JdF6gA1e"
OTHER_STRONG_KEK = "Qe5Tz9Wm2Rk7Xv4Bn8Hc3Lp6Jd1Fy0Gs"


def production_settings(database_url: str, **overrides: Any) -> dict[str, Any]:
    """Settings the production guard accepts, on the test database. The tests' cheap argon2
    (and SQLite, on that backend) are waived: each waiver is logged, as in a deployment."""
    waived = ["argon2"] + (["sqlite"] if database_url.startswith("sqlite") else [])
    return {
        "AUTHSVC_ENV": "production",
        "DATABASE_URL": database_url,
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",  # a relay on this host: SMTP_TLS=none allowed
        "FRONTEND_URL": "https://app.example.org",
        "PUBLIC_URL": "https://auth.example.org",
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
        # Its own keys (they expire with their windows): runs in parallel never share limits.
        "RATELIMIT_KEY_PREFIX": f"authsvc-test-{uuid.uuid4().hex[:12]}",
        "PRODUCTION_ALLOW_UNSAFE": ",".join(waived),
        **overrides,
    }


class MovableClock:
    """The system clock plus an offset tests can push forward: time is injected, not patched."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def clock() -> MovableClock:
    return MovableClock()


def _empty_tables(engine: Any) -> None:
    # Signing keys stay: every app in the run shares them (as every worker of a deployment
    # does), and apps cache them. Tests about keys use their own database (fresh_database_url).
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "signing_keys":
                conn.execute(delete(table))


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own, not migrated, dropped afterwards."""
    if backend == "postgresql":
        url, drop = create_scratch_database("authsvc_scratch")
        yield url
        drop()
    else:
        yield f"sqlite:///{tmp_path / 'scratch.db'}"


@pytest.fixture
def fresh_database_url(empty_database_url: str) -> str:
    """A database of its own, migrated to the head, dropped afterwards."""
    command.upgrade(alembic_config(empty_database_url), "head")
    return empty_database_url


@pytest.fixture(scope="session")
def session_app(base_config: dict[str, Any], clock: MovableClock) -> Iterator[Any]:
    app = create_app(base_config, clock=clock)
    yield app
    app.extensions["authsvc_db"][0].dispose()


@pytest.fixture
def app(session_app: Any, clock: MovableClock) -> Iterator[Any]:
    """The shared app, with empty tables and the clock back at real time after each test."""
    yield session_app
    clock.offset = timedelta()
    _empty_tables(session_app.extensions["authsvc_db"][0])


@pytest.fixture
def make_app(base_config: dict[str, Any], clock: MovableClock) -> Iterator[Callable[..., Any]]:
    """An app with extra settings, on the same database; its tables are emptied afterwards."""
    made: list[Any] = []

    def factory(**overrides: Any) -> Any:
        application = create_app({**base_config, **overrides}, clock=clock)
        made.append(application)
        return application

    yield factory
    clock.offset = timedelta()
    for application in made:
        engine = application.extensions["authsvc_db"][0]
        # Apps on a database of their own (fresh_database_url) leave it to be dropped.
        if base_config["DATABASE_URL"] == application.extensions["authsvc"].settings.DATABASE_URL:
            _empty_tables(engine)
        engine.dispose()


@pytest.fixture
def smtp() -> Iterator[Any]:
    """A real SMTP server on loopback (tests/mailtest.py); mail still queued is sent first."""
    from mailtest import SmtpServer

    from authsvc import mail

    server = SmtpServer()
    yield server
    mail.wait_until_sent(15)
    server.stop()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def engine(app: Any) -> Any:
    return app.extensions["authsvc_db"][0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def register(client: Any) -> Callable[..., dict[str, Any]]:
    """Register an account and return its TokenPair (asserting the 201)."""

    def do(email: str = "alice@example.com", password: str = PASSWORD, **extra: Any) -> dict:
        response = client.post(
            "/api/auth/register", json={"email": email, "password": password, **extra}
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return do


@pytest.fixture
def user(register: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return register()


@pytest.fixture
def login(client: Any) -> Callable[..., dict[str, Any]]:
    def do(email: str = "alice@example.com", password: str = PASSWORD, **headers: str) -> dict:
        response = client.post(
            "/api/auth/login", json={"email": email, "password": password}, headers=headers
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    return do


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real gunicorn serving wsgi:app over loopback."""

    def __init__(self, env: dict[str, str], workers: int, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        gunicorn = Path(sys.executable).parent / "gunicorn"
        # gunicorn.conf.py applies (gunicorn reads it from the working directory), with its
        # worker class: what a deployment runs.
        self.process = subprocess.Popen(
            [
                str(gunicorn),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--log-level",
                "warning",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited: {self.process.stderr.read().decode()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not become ready within 30 s")

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """End a server the tests started: SIGTERM, then SIGKILL after 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr:
        process.stderr.close()


def server_env(config: dict[str, Any], **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    for key, value in {**config, **extra}.items():
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@pytest.fixture
def live_server(app: Any, base_config: dict[str, Any]) -> Iterator[Callable[..., LiveServer]]:
    """Start gunicorn on the test database: live_server(workers=4, threads=1, **settings)."""
    servers: list[LiveServer] = []

    def start(workers: int = 2, threads: int = 1, **settings: Any) -> LiveServer:
        server = LiveServer(server_env(base_config, **settings), workers, threads)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
