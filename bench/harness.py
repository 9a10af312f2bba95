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
CONNECTIONS, WRK_THREADS = 8, 2  # wrk's keep-alive connections and threads
WORKERS, THREADS = 2, 4  # gunicorn's, for every server
SETTINGS = (
    f"each server: its checkout's gunicorn.conf.py with {WORKERS} workers x {THREADS} threads; "
    f"wrk {CONNECTIONS} connections, {WRK_THREADS} threads"
)


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: requests per second, latency percentiles and failures."""

    rate: float
    p50_ms: float
    p99_ms: float
    failures: int  # non-2xx answers, socket errors and timeouts
    first_failure: str  # status and start of the body of the first non-2xx answer


def run_wrk(
    wrk: str, url: str, script: str, seconds: int, env: Mapping[str, str], workdir: Path
) -> LoadResult:
    """Drive `url` with wrk for `seconds`; common.lua writes the figures to a JSON file."""
    out = workdir / f"wrk-{uuid.uuid4().hex[:8]}.json"
    env = {**os.environ, **env, "BENCH_LUA_DIR": str(LUA_DIR), "BENCH_RESULT_FILE": str(out)}
    env["BENCH_WRK_THREADS"] = str(WRK_THREADS)
    command = [wrk, "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s"]
    # wrk's default timeout (2 s) would leave slow answers out of the latency figures.
    command += ["--timeout", "10s", "-s", str(LUA_DIR / script), url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise BenchError(f"wrk failed (exit {done.returncode}) on {url} with {script}:\n{output}")
    data = json.loads(out.read_text())
    out.unlink()
    errors = ("non2xx", "connect_errors", "read_errors", "write_errors", "timeouts")
    return LoadResult(
        rate=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        failures=sum(data[k] for k in errors),
        first_failure=data["first_failure"],
    )


class Server:
    """`python -m gunicorn -c gunicorn.conf.py <app>` in a checkout, on a free port.

    The runner's interpreter (its venv) serves every checkout; `env` puts the checkout's code
    on PYTHONPATH. `ready` is a path that answers once the app is up.
    """

    def __init__(self, app: str, cwd: Path, env: Mapping[str, str], log: Path, ready: str):
        self.app, self.cwd, self.env, self.log, self.ready = app, cwd, env, log, ready
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *command, self.app],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(self.process, deadline=time.monotonic() + 90)
        except BaseException:
            self.__exit__()  # a server that never became ready must not outlive the run
            raise
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, _ = http_call(self.port, self.ready, timeout=2)
                booted = len(children.read_text().split())
            except OSError:
                status, booted = 0, 0
            # Every worker must have booted, or the first seconds would measure imports.
            if 0 < status < 500 and booted >= WORKERS:
                return
            time.sleep(0.2)
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        raise BenchError(f"gunicorn did not start {self.app} in {self.cwd}:\n{tail}")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def http_call(
    port: int, path: str, body: Mapping[str, Any] | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """A GET, or a POST of `body`, to 127.0.0.1:`port`; the status and the JSON body (or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    try:
        conn.request("POST" if body else "GET", path, json.dumps(body) if body else None, headers)
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
            version = str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
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
