"""Where a scenario's time goes inside the gunicorn workers: wrk load + /proc + py-spy.

    .venv/bin/pip install py-spy      # a profiling tool, not a dependency of authsvc
    .venv/bin/python -m bench.profile refresh me --backend postgresql --seconds 15 --single

Runs authsvc as `make bench` does and, for one scenario at a time:

1. a wrk run that splits the CPU time per request among the gunicorn workers (user and
   system), the PostgreSQL backends of the bench database, wrk and the rest of the machine
   (from /proc);
2. a wrk run during which py-spy samples every worker (100 Hz), summarised per component
   (by the module of the innermost Python frame) and per function (inclusive and self), in
   thread-milliseconds per request. Samples of threads that wait for work (the acceptor's
   poll, an idle pool thread) are left out; waits for PostgreSQL are shown as such.

`--single` serves with one worker of one thread, so that every sample is that thread's CPU
or its wait on the database, without GIL contention; the default is the bench profile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .harness import (
    BIN,
    CONNECTIONS,
    LUA_DIR,
    WRK_THREADS,
    BenchError,
    ensure_wrk,
    postgres_scratch_database,
    run_wrk,
)
from .scenarios import SCENARIOS, Authsvc

SAMPLE_RATE = 100  # py-spy samples per second and thread
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Innermost frames of threads that are waiting for work, not serving a request.
IDLE_FRAMES = (
    "EpollSelector.select (selectors.py)",
    "_worker (concurrent/futures/thread.py)",
    "Arbiter.wait_for_signals (gunicorn/arbiter.py)",
    "Arbiter.sleep (gunicorn/arbiter.py)",
)
# Innermost frames of a thread waiting for PostgreSQL: psycopg's own wait, and the libpq call
# of the hot statements (`_Held.execute_prepared`, whose own time is PQexecPrepared: send,
# wait, receive; the client CPU of that call is counted as waiting here).
DATABASE_WAIT = (
    "Connection.wait (psycopg/connection.py)",
    "_Held.execute_prepared (authsvc/db.py)",
)

# Module path fragments of the innermost frame -> component.
COMPONENTS = (
    ("authsvc/", "authsvc"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("psycopg", "psycopg (driver, not waiting)"),
    ("sqlite3/", "sqlite3 (driver)"),
    ("flask_smorest/", "flask-smorest/webargs/marshmallow"),
    ("webargs/", "flask-smorest/webargs/marshmallow"),
    ("marshmallow/", "flask-smorest/webargs/marshmallow"),
    ("apispec/", "flask-smorest/webargs/marshmallow"),
    ("flask_limiter/", "flask-limiter/limits"),
    ("limits/", "flask-limiter/limits"),
    ("flask/", "Flask/Werkzeug"),
    ("werkzeug/", "Flask/Werkzeug"),
    ("jwt/", "PyJWT + cryptography"),
    ("cryptography/", "PyJWT + cryptography"),
    ("argon2/", "argon2"),
    ("gunicorn/", "gunicorn"),
    ("prometheus_client/", "prometheus_client"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("email_validator/", "email-validator"),
)


def component(frame: str) -> str:
    """'func (path/to/module.py)' -> the component it belongs to."""
    if frame in DATABASE_WAIT:
        return "waiting for PostgreSQL"
    where = frame.rsplit("(", 1)[-1]
    for fragment, name in COMPONENTS:
        if fragment in where:
            return name
    return "stdlib/other: " + where.rstrip(")").split("/")[0]


def parse_raw(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) output: 'frame;frame;… count' per line, outermost first."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = tuple(f for f in stack.split(";") if not f.startswith(("process ", "thread ")))
            stacks[frames] += int(count)
    return stacks


def summarise(
    stacks: Counter[tuple[str, ...]],
    requests: float,
    top: int = int(os.environ.get("BENCH_PROFILE_TOP", 20)),
) -> str:
    """Per component and per function: thread-ms per request and share of busy samples."""
    busy = Counter({s: n for s, n in stacks.items() if s and s[-1] not in IDLE_FRAMES})
    total = sum(busy.values())
    if not total or requests <= 0:
        return "  (no samples)"
    by_component: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in busy.items():
        by_component[component(stack[-1])] += count
        own[stack[-1]] += count
        for frame in set(stack):
            inclusive[frame] += count

    def rows(counter: Iterable[tuple[str, int]]) -> list[str]:
        ms = 1000 / SAMPLE_RATE / requests
        return [f"    {n * ms:7.3f} ms  {n / total:6.1%}  {name}" for name, n in counter]

    idle = sum(stacks.values()) - total
    lines = [
        f"  {total} busy samples ({idle} idle left out) over ~{requests:.0f} requests; "
        "thread-ms per request, share of busy samples:",
        "",
        "  by component (innermost Python frame):",
        *rows(by_component.most_common()),
        "",
        f"  top {top} functions, inclusive:",
        *rows(inclusive.most_common(top)),
        "",
        f"  top {top} functions, self:",
        *rows(own.most_common(top)),
    ]
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'authsvc-profile.db'}"
    else:
        with postgres_scratch_database() as (url, _):
            yield url


# --- CPU accounting from /proc ----------------------------------------------------------


def process_cpu(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds a process has used so far; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def postgres_pids() -> set[int]:
    pids = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                pids.add(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def backend_pids(database_url: str) -> set[int]:
    """PostgreSQL server processes serving the bench database (the workers' connections)."""
    if not database_url.startswith("postgresql"):
        return set()
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return {int(pid) for (pid,) in rows}
    finally:
        engine.dispose()


def machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def cpu_per_request(target: Authsvc, wrk: str, scenario: str, seconds: float, workdir: Path) -> str:
    """Run the scenario once and split the CPU it cost among the processes involved."""
    script, env = target.prepare(scenario, "cpu")
    workers = set(target.server.worker_pids())
    backends = backend_pids(target.database_url)
    postgres = postgres_pids()
    before = {pid: process_cpu(pid) for pid in workers | postgres}
    children, busy, began = os.times(), machine_busy_seconds(), time.monotonic()
    result = run_wrk(wrk, target.url, script, seconds, env, workdir)
    wall = time.monotonic() - began
    busy = machine_busy_seconds() - busy
    wrk_cpu = sum(os.times()[2:4]) - sum(children[2:4])
    backends |= backend_pids(target.database_url)
    postgres |= postgres_pids()

    def spent(pids: set[int], part: int | None = None) -> float:
        total = 0.0
        for pid in pids:
            now, then = process_cpu(pid), before.get(pid) or (0.0, 0.0)
            if now is not None:
                total += sum(now) - sum(then) if part is None else now[part] - then[part]
        return total

    groups = {
        "gunicorn workers, user": spent(workers, 0),
        "gunicorn workers, system": spent(workers, 1),
    }
    if backends:
        groups["PostgreSQL backends of the bench database"] = spent(backends)
        groups["PostgreSQL, its other processes (WAL writer …)"] = spent(postgres - backends)
    groups["wrk"] = wrk_cpu
    groups["everything else on the machine"] = max(0.0, busy - sum(groups.values()))
    n = max(1, result.requests)
    cores = os.cpu_count() or 1
    lines = [
        f"  CPU per request over {result.requests} requests in {wall:.1f} s "
        f"({result.rate:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"non-2xx {result.non2xx}; the machine {busy / wall / cores:.0%} busy on {cores} cores):"
    ]
    lines += [f"    {cpu * 1000 / n:7.3f} ms  {name}" for name, cpu in groups.items()]
    return "\n".join(lines)


# --- sampling -----------------------------------------------------------------------------


def sample_workers(
    target: Authsvc, wrk: str, spy: str, scenario: str, seconds: float, workdir: Path
) -> str:
    script, env = target.prepare(scenario, "run")
    result_file = workdir / "profile-wrk.json"
    load = subprocess.Popen(
        [
            wrk,
            "-t",
            str(WRK_THREADS),
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{int(seconds) + 3}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_DIR / script),
            target.url,
        ],
        env={
            **os.environ,
            **env,
            "BENCH_LUA_DIR": str(LUA_DIR),
            "BENCH_RESULT_FILE": str(result_file),
            "BENCH_WRK_THREADS": str(WRK_THREADS),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    outputs = []
    try:
        time.sleep(1)
        spies = []
        for pid in target.server.worker_pids():
            out = workdir / f"py-spy-{scenario}-{pid}.txt"
            outputs.append(out)
            command = [spy, "record", "--pid", str(pid), "--format", "raw", "--nolineno"]
            command += ["--rate", str(SAMPLE_RATE), "--duration", str(int(seconds))]
            command += ["--output", str(out)]
            spies.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
        for spied in spies:
            _, err = spied.communicate()
            if spied.returncode != 0:
                raise BenchError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")
    finally:
        load.wait()
    data = json.loads(result_file.read_text())
    rate = data["requests"] / (data["duration_us"] / 1e6)
    stacks: Counter[tuple[str, ...]] = Counter()
    for out in outputs:
        stacks.update(parse_raw(out))
    return summarise(stacks, rate * int(seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=["refresh", "me"], choices=SCENARIOS)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument(
        "--single",
        action="store_true",
        help="serve with one worker of one thread (no GIL contention in the samples)",
    )
    args = parser.parse_args(argv)
    extra_env = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "1"} if args.single else {}
    shape = "1 worker x 1 thread" if args.single else "bench profile"
    try:
        spy, wrk = py_spy(), ensure_wrk()
        with tempfile.TemporaryDirectory(prefix="authsvc-profile-") as tmp:
            workdir = Path(tmp)
            with (
                database(args.backend, workdir) as url,
                Authsvc(args.backend, url, workdir, extra_env) as target,
            ):
                for scenario in args.scenarios:
                    label = SCENARIOS[scenario][0]
                    print(f"{label} on {args.backend} ({shape}, {args.seconds:g} s):", flush=True)
                    script, env = target.prepare(scenario, "warm")
                    run_wrk(wrk, target.url, script, 3, env, workdir)
                    print(cpu_per_request(target, wrk, scenario, args.seconds, workdir))
                    print("\n  py-spy:")
                    print(sample_workers(target, wrk, spy, scenario, args.seconds, workdir))
                    print(flush=True)
    except BenchError as exc:
        print(f"bench.profile: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
