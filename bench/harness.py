"""What the runner drives: wrk, gunicorn servers and scratch PostgreSQL databases."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).resolve().parent
CONNECTIONS = 8  # wrk's keep-alive connections
WRK_THREADS = 2
WORKERS, THREADS = 2, 4  # gunicorn, for every server


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: throughput, latency percentiles and failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int = 0
    errors: int = 0  # socket errors and timeouts
    starved: int = 0  # refresh requests that found no live token (a chain broke)
    first_failure: str = ""  # status and start of the body of the first non-2xx answer

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    wrk: str, url: str, script: str, seconds: int, env: Mapping[str, str], workdir: Path
) -> LoadResult:
    """Drive `url` with wrk for `seconds`; common.lua writes the figures to a JSON file."""
    result_file = workdir / f"wrk-{uuid.uuid4().hex[:8]}.json"
    command = [wrk, "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s"]
    # wrk's default timeout (2 s) would leave slow answers out of the latency figures.
    command += ["--timeout", "10s", "-s", str(LUA_DIR / script), url]
    lua_env = {
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_RESULT_FILE": str(result_file),
        "BENCH_WRK_THREADS": str(WRK_THREADS),
    }
    done = subprocess.run(
        command,
        env={**os.environ, **env, **lua_env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    if done.returncode != 0 or not result_file.exists():
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise BenchError(f"wrk failed (exit {done.returncode}) on {url} with {script}:\n{output}")
    data = json.loads(result_file.read_text())
    result_file.unlink()
    errors = ("connect_errors", "read_errors", "write_errors", "timeouts")
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=int(data["non2xx"]),
        errors=sum(int(data[k]) for k in errors),
        starved=int(data["starved"]),
        first_failure=data["first_failure"],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m gunicorn -c gunicorn.conf.py <app>` run in `cwd`, on a free port."""

    def __init__(
        self, name: str, app: str, cwd: Path, env: Mapping[str, str], log: Path, ready: str
    ) -> None:
        self.name, self.app, self.cwd, self.env, self.log = name, app, cwd, env, log
        self.ready_path = ready
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *command, self.app],  # the runner's venv, for every checkout
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()  # a server that never became ready must not outlive the run
            raise
        return self

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name}: gunicorn exited during start\n{self.log_tail()}")
            try:
                status, _ = http_call(self.port, "GET", self.ready_path, timeout=2)
            except OSError:
                status = 0
            # Every worker must have booted, or the first seconds would measure imports.
            if 0 < status < 500 and len(child_pids(self.process.pid)) >= WORKERS:
                return
            time.sleep(0.2)
        raise BenchError(f"{self.name}: not ready within {timeout:.0f} s\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def child_pids(pid: int) -> list[int]:
    """gunicorn's workers: the direct children of the master, from /proc."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def http_call(
    port: int, method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """One request to 127.0.0.1:`port`; the status and the decoded JSON body (or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    try:
        conn.request(method, path, json.dumps(body) if body else None, headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, None


@contextmanager
def postgres_database(server_url: str) -> Iterator[tuple[str, str]]:
    """A fresh database on the PostgreSQL server of `server_url`, dropped afterwards.

    Yields its URL and the server's version.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    admin = make_url(server_url)
    name = f"authsvc_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        engine.dispose()
        where = admin.render_as_string(hide_password=True)
        raise BenchError(f"cannot create a database on {where}: {exc}") from None
    try:
        yield admin.set(database=name).render_as_string(hide_password=False), version
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
