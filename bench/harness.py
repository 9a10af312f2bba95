"""The benchmark's moving parts: wrk, gunicorn servers, scratch databases, bare argon2."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CONNECTIONS = 8
WRK_THREADS = 2
WRK_TIMEOUT = "10s"  # wrk's default (2 s) would drop slow responses from the latency figures
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why and what to do."""


class DatabaseUnavailable(BenchError):
    """The PostgreSQL server for the scratch database cannot be reached or used."""


# --- wrk -------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when it is missing (and we are allowed to)."""
    found = shutil.which("wrk")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise BenchError(
            "wrk (the load generator) is not installed and apt-get is not available here: "
            "install wrk (https://github.com/wg/wrk) and run `make bench` again"
        )
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif shutil.which("sudo"):
        sudo = ["sudo", "-n"]
    else:
        raise BenchError(
            "wrk is not installed and installing it needs root: run `apt-get install wrk` "
            "as root, then `make bench` again"
        )
    print("wrk (the load generator) is not installed: installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        print("  $ " + " ".join(sudo + command), flush=True)
        done = subprocess.run(sudo + command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(
                f"`{' '.join(command)}` failed (exit {done.returncode}); install wrk by hand "
                f"and run `make bench` again:\n{done.stderr.strip()[-1500:]}"
            )
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    """`wrk -v` says "wrk 4.1.0 [epoll] Copyright …"; the version part."""
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    words = (done.stdout or done.stderr).split()
    return words[1] if len(words) > 1 else "?"


def cpu_idle_fraction(seconds: float) -> float:
    """How idle the machine's CPUs were over the next `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 1.0
    return (idle1 - idle0) / max(1, total1 - total0)


@dataclass(frozen=True)
class LoadResult:
    """What one measured run gave: throughput, latency percentiles, failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int = 0  # socket errors and timeouts (wrk) or failed calls (argon2)
    starved: int = 0  # refresh requests that found no live token (a chain broke)
    first_failure: str = ""  # status and body start of the first non-2xx answer

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    wrk: str,
    url: str,
    script: str,
    seconds: float,
    env: Mapping[str, str],
    workdir: Path,
) -> LoadResult:
    """Drive `url` with wrk (8 keep-alive connections, 2 threads) for `seconds`."""
    result_file = workdir / f"wrk-{uuid.uuid4().hex[:8]}.json"
    command = [
        wrk,
        "-t",
        str(WRK_THREADS),
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(LUA_DIR / script),
        url,
    ]
    full_env = {
        **os.environ,
        **env,
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_RESULT_FILE": str(result_file),
        "BENCH_WRK_THREADS": str(WRK_THREADS),
    }
    done = subprocess.run(
        command, env=full_env, capture_output=True, text=True, timeout=seconds + 120
    )
    if done.returncode != 0 or not result_file.exists():
        raise BenchError(
            f"wrk failed (exit {done.returncode}) on {url} with {script}:\n"
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    data = json.loads(result_file.read_text())
    result_file.unlink()
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=int(data["non2xx"]),
        errors=sum(
            int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        starved=int(data["starved"]),
        first_failure=data.get("first_failure", ""),
    )


# --- gunicorn ---------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One gunicorn master (and its workers) started with gunicorn.conf.py's bench profile."""

    name: str
    app: str
    env: dict[str, str]
    workdir: Path
    ready_path: str = "/"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"gunicorn-{self.name}.log"

    def start(self) -> None:
        env = {
            **os.environ,
            **self.env,
            "AUTHSVC_GUNICORN_PROFILE": "bench",
            "AUTHSVC_BIND": f"127.0.0.1:{self.port}",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", self.app],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never became ready must not outlive the run
            raise

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BenchError(f"{self.name}: gunicorn exited during start\n{self.log_tail()}")
            try:
                status, _ = http_call(self.port, "GET", self.ready_path, timeout=2)
            except OSError:
                time.sleep(0.1)
                continue
            # Every worker must have booted, or the first seconds measure imports.
            if status < 500 and len(self.worker_pids()) >= self.expected_workers():
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name}: not ready within {timeout:.0f} s\n{self.log_tail()}")

    def expected_workers(self) -> int:
        return int(self.env.get("WEB_CONCURRENCY", os.environ.get("WEB_CONCURRENCY", 2)))

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        return child_pids(self.process.pid)

    def worker_rss_mib(self) -> list[float]:
        return [rss_mib(pid) for pid in self.worker_pids()]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (gunicorn's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in children.read_text().split()]
    except OSError:
        pass
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def http_call(
    port: int,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """One request to 127.0.0.1:`port`; the status and the decoded JSON body (or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    return response.status, data


# --- databases ----------------------------------------------------------------------------


def migrate(url: str, workdir: Path) -> None:
    """`alembic upgrade head` on `url`, as `make migrate` does it."""
    done = subprocess.run(
        [str(BIN / "alembic"), "-x", f"url={url}", "upgrade", "head"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"alembic upgrade head failed on the bench database:\n{done.stderr}")


def postgres_admin_url() -> str:
    from authsvc.config import normalise_database_url

    raw = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or DEFAULT_POSTGRES
    )
    return normalise_database_url(raw)


@contextmanager
def postgres_scratch_database() -> Iterator[tuple[str, str]]:
    """A fresh database on the BENCH_DATABASE_URL/TEST_DATABASE_URL server, dropped after.

    Yields (url, server version). Raises DatabaseUnavailable when the server cannot be
    reached or refuses to create the database.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    admin = make_url(postgres_admin_url())
    name = f"authsvc_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar() or "?"
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        engine.dispose()
        where = admin.render_as_string(hide_password=True)
        raise DatabaseUnavailable(
            f"PostgreSQL at {where} is not usable ({type(exc).__name__})"
        ) from None
    try:
        yield admin.set(database=name).render_as_string(hide_password=False), str(version)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


# --- argon2 ----------------------------------------------------------------------------------


def argon2_verify_throughput(
    memory_cost: int, time_cost: int, parallelism: int, seconds: float, threads: int
) -> LoadResult:
    """Bare argon2id verifications per second, `threads` threads calling argon2-cffi's verify.

    argon2-cffi releases the GIL while hashing, so threads use every core like processes.
    """
    from argon2 import PasswordHasher, Type

    hasher = PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_cost,
        parallelism=parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )
    password = "argon2 ceiling " + uuid.uuid4().hex
    encoded = hasher.hash(password)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads
    start = threading.Event()
    deadline = 0.0

    def work(index: int) -> None:
        start.wait()
        own = latencies[index]
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            try:
                hasher.verify(encoded, password)
            except Exception:
                failures[index] += 1
            own.append(time.perf_counter() - began)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    samples = sorted(x for own in latencies for x in own)
    return LoadResult(
        requests=len(samples),
        seconds=elapsed,
        p50_ms=percentile(samples, 50) * 1000,
        p99_ms=percentile(samples, 99) * 1000,
        non2xx=sum(failures),
    )


def percentile(sorted_samples: list[float], p: float) -> float:
    if not sorted_samples:
        return 0.0
    index = min(len(sorted_samples) - 1, max(0, round(p / 100 * len(sorted_samples)) - 1))
    return sorted_samples[index]
