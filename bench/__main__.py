"""`python -m bench` (`make bench`): /me, refresh and login under wrk, side by side.

Serves authsvc from this checkout, and from another one when BENCH_COMPARE names it, each with
its own gunicorn.conf.py (2 gthread workers x 4 threads) on SQLite and on PostgreSQL, drives
them in turn with wrk and prints one table (also written to bench/results/latest.md).
Environment: BENCH_COMPARE, BENCH_QUICK=1, BENCH_SECONDS, BENCH_REPEATS,
BENCH_BACKENDS=sqlite,postgresql, BENCH_DATABASE_URL (the PostgreSQL server). See README.md.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from .harness import (
    CONNECTIONS,
    THREADS,
    WORKERS,
    WRK_THREADS,
    BenchError,
    LoadResult,
    postgres_database,
    run_wrk,
)
from .scenarios import SCENARIOS, Authsvc, Checkout, check_own_code, hello_server, prepare_hello

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Plan:
    quick: bool
    seconds: int  # per measured run
    repeats: int  # measured runs per scenario and checkout; the best is kept
    warmup: int
    backends: list[str]
    postgres: str
    compare: Path | None


def plan_from_env() -> Plan:
    env = os.environ
    quick = env.get("BENCH_QUICK", "") not in ("", "0")
    backends = [b.strip() for b in env.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        raise BenchError(f"BENCH_BACKENDS: unknown backend(s) {', '.join(sorted(unknown))}")
    compare = Path(env["BENCH_COMPARE"]).resolve() if env.get("BENCH_COMPARE") else None
    if compare is not None and not (compare / "wsgi.py").is_file():
        raise BenchError(f"BENCH_COMPARE={compare} is not a checkout of authsvc (no wsgi.py)")
    return Plan(
        quick=quick,
        seconds=int(env.get("BENCH_SECONDS") or (3 if quick else 8)),
        repeats=max(1, int(env.get("BENCH_REPEATS") or (2 if quick else 3))),
        warmup=1 if quick else 3,
        backends=backends,
        postgres=env.get("BENCH_DATABASE_URL") or POSTGRES,
        compare=compare,
    )


@dataclass
class Row:
    scenario: str
    backend: str
    results: dict[str, LoadResult]  # by checkout name


Target = tuple[str, str, Callable[[], tuple[str, dict[str, str]]]]  # checkout, url, prepare


def measure(plan: Plan, wrk: str, targets: list[Target], workdir: Path) -> dict[str, LoadResult]:
    """A warm-up of each target, then their runs in turn (A, B, A, B …); each one's best.

    Turns put both checkouts through the same stretches of a shared machine's drifting speed,
    and other work only ever slows a run down, so the fastest run is the steadiest figure.
    """
    for _, url, prepare in targets:
        script, env = prepare()
        run_wrk(wrk, url, script, plan.warmup, env, workdir)
    runs: dict[str, list[LoadResult]] = {name: [] for name, _, _ in targets}
    for _ in range(plan.repeats):
        for name, url, prepare in targets:
            script, env = prepare()
            runs[name].append(run_wrk(wrk, url, script, plan.seconds, env, workdir))
    return {name: best_of(results) for name, results in runs.items()}


def best_of(results: list[LoadResult]) -> LoadResult:
    """The fastest run, carrying the failures of every run (a failure must still show)."""
    return dataclasses.replace(
        max(results, key=lambda r: r.rate),
        non2xx=sum(r.non2xx for r in results),
        errors=sum(r.errors for r in results),
        starved=sum(r.starved for r in results),
        first_failure=next((r.first_failure for r in results if r.first_failure), ""),
    )


def bench(
    plan: Plan, wrk: str, checkouts: list[Checkout], workdir: Path, versions: dict[str, str]
) -> list[Row]:
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        figures = "; ".join(
            f"{name} {r.rate:,.0f} req/s, p99 {r.p99_ms:.1f} ms" for name, r in row.results.items()
        )
        print(f"  {row.scenario:<26} {row.backend:<10} {figures}", flush=True)

    with ExitStack() as stack:
        servers = [stack.enter_context(hello_server(c, workdir)) for c in checkouts]
        targets = [(c.name, s.url, prepare_hello) for c, s in zip(checkouts, servers, strict=True)]
        record(Row("hello (ceiling)", "—", measure(plan, wrk, targets, workdir)))
    for backend in plan.backends:
        with ExitStack() as stack:
            apps = []
            for checkout in checkouts:
                if backend == "sqlite":
                    url = f"sqlite:///{workdir / f'authsvc-{checkout.name}.db'}"
                else:
                    url, version = stack.enter_context(postgres_database(plan.postgres))
                    versions["PostgreSQL"] = version
                apps.append(stack.enter_context(Authsvc(checkout, backend, url, workdir)))
            for scenario, label in SCENARIOS.items():
                targets = [(a.checkout.name, a.url, partial(a.prepare, scenario)) for a in apps]
                record(Row(label, backend, measure(plan, wrk, targets, workdir)))
    return rows


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def report(
    plan: Plan,
    checkouts: list[Checkout],
    rows: list[Row],
    started: datetime,
    versions: dict[str, str],
) -> str:
    names = [c.name for c in checkouts]
    mode = "quick run" if plan.quick else "full run"
    lines = [
        f"# authsvc benchmark, {started:%Y-%m-%d %H:%M} UTC ({mode})",
        "",
        *[f"- {c.name}: {c.path} ({c.revision()})" for c in checkouts],
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; load average "
        f"{os.getloadavg()[0]:.2f} at the end; "
        + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"- each server: its checkout's gunicorn.conf.py, {WORKERS} workers x {THREADS} "
        "threads; authsvc in production mode, ES256, rate limits off",
        f"- wrk {CONNECTIONS} connections, {WRK_THREADS} threads; per scenario and checkout a "
        f"{plan.warmup} s warm-up, then the best of {plan.repeats} runs of {plan.seconds} s"
        + (", the checkouts in turn" if len(names) > 1 else ""),
        "",
    ]
    ratio = len(names) == 2
    header = ["scenario", "backend"] + [f"req/s {n}" for n in names]
    header += [f"{names[0]}/{names[1]}"] if ratio else []
    header += [f"p50 ms {n}" for n in names] + [f"p99 ms {n}" for n in names] + ["non-2xx"]
    lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    notes = []
    for row in rows:
        rs = [row.results[n] for n in names]
        cells = [row.scenario, row.backend] + [f"{r.rate:,.0f}" for r in rs]
        if ratio:
            cells.append(f"{rs[0].rate / rs[1].rate:.2f}" if rs[1].rate else "")
        cells += [f"{r.p50_ms:.2f}" for r in rs] + [f"{r.p99_ms:.2f}" for r in rs]
        cells.append(" / ".join(str(r.non2xx + r.errors) for r in rs))
        lines.append("| " + " | ".join(cells) + " |")
        for name, r in zip(names, rs, strict=True):
            if r.non2xx or r.errors:
                notes.append(
                    f"- {row.scenario} on {row.backend} ({name}): {r.non2xx} non-2xx, "
                    f"{r.errors} socket errors, {r.starved} without a live token; "
                    f"first failure: {r.first_failure[:200]}"
                )
    if notes:
        lines += ["", "Failures (their figures do not count):", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    started = datetime.now(UTC)
    try:
        plan = plan_from_env()
        wrk = shutil.which("wrk")
        if wrk is None:
            raise BenchError(
                "wrk (the load generator) is not installed: run `apt-get install wrk` "
                "(as root), then `make bench` again"
            )
        banner = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split()
        versions = {
            "Python": platform.python_version(),
            "SQLite": sqlite3.sqlite_version,
            "wrk": banner[1] if len(banner) > 1 else "?",
        }
        checkouts = [Checkout("this", ROOT)]
        if plan.compare is not None:
            checkouts.append(Checkout("other", plan.compare, write_bytecode=False))
        check_own_code(checkouts)
        print(
            f"bench ({'quick' if plan.quick else 'full'}): {', '.join(plan.backends)}; "
            + ", ".join(f"{c.name} = {c.path}" for c in checkouts),
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
            rows = bench(plan, wrk, checkouts, Path(tmp), versions)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    text = report(plan, checkouts, rows, started, versions)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    print(f"\n{text}\n(also written to {RESULTS / 'latest.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
