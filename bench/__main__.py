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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from .harness import SETTINGS, BenchError, LoadResult, postgres_database, run_wrk
from .scenarios import SCENARIOS, Authsvc, Checkout, Prepared, hello_server, prepare_hello

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
Targets = dict[str, tuple[str, Callable[[], Prepared]]]  # checkout: its server's URL, a run's setup


@dataclass
class Run:
    """One `make bench`: its settings from the environment, and the rows it has measured."""

    checkouts: list[Checkout]
    quick: bool
    seconds: int  # per measured run
    repeats: int  # measured runs per scenario and checkout; the best is kept
    backends: list[str]
    postgres: str  # the server the scratch databases are made on
    wrk: str
    workdir: Path = ROOT
    versions: dict[str, str] = field(default_factory=dict)
    rows: list[tuple[str, str, dict[str, LoadResult]]] = field(default_factory=list)

    @property
    def warmup(self) -> int:
        return 1 if self.quick else 3

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Run:
        checkouts = [Checkout("this", ROOT)]
        if env.get("BENCH_COMPARE"):
            checkouts.append(Checkout("other", Path(env["BENCH_COMPARE"]).resolve()))
        quick = env.get("BENCH_QUICK", "") not in ("", "0")
        backends = [b.strip() for b in env.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")]
        if set(backends) - {"sqlite", "postgresql"}:
            raise BenchError(f"BENCH_BACKENDS={','.join(backends)}: sqlite and postgresql only")
        wrk = shutil.which("wrk")
        if wrk is None:
            raise BenchError("wrk, the load generator, is missing: `apt-get install wrk` as root")
        return cls(
            checkouts,
            quick=quick,
            seconds=int(env.get("BENCH_SECONDS") or (3 if quick else 8)),
            repeats=max(1, int(env.get("BENCH_REPEATS") or (2 if quick else 3))),
            backends=backends,
            postgres=env.get("BENCH_DATABASE_URL") or POSTGRES,
            wrk=wrk,
        )

    def measure(self, scenario: str, backend: str, targets: Targets) -> None:
        """A warm-up of each target, then their runs in turn (A, B, A, B …); each one's best.

        Turns put the checkouts through the same stretches of a shared machine's drifting
        speed, and other work only ever slows a run down: the fastest run is the steadiest.
        """
        runs: dict[str, list[LoadResult]] = {name: [] for name in targets}
        for turn in range(self.repeats + 1):  # turn 0 warms up
            for name, (url, prepare) in targets.items():
                script, env = prepare()
                seconds = self.seconds if turn else self.warmup
                result = run_wrk(self.wrk, url, script, seconds, env, self.workdir)
                if turn:
                    runs[name].append(result)
        best = {name: best_of(results) for name, results in runs.items()}
        self.rows.append((scenario, backend, best))
        figures = [f"{n} {r.rate:,.0f} req/s, p99 {r.p99_ms:.1f} ms" for n, r in best.items()]
        print(f"  {scenario:<26} {backend:<10} {'; '.join(figures)}", flush=True)

    def bench(self) -> None:
        with ExitStack() as stack:
            targets = {}
            for checkout in self.checkouts:
                hello = stack.enter_context(hello_server(checkout, self.workdir))
                targets[checkout.name] = (hello.url, prepare_hello)
            self.measure("hello (ceiling)", "—", targets)
        for backend in self.backends:
            with ExitStack() as stack:
                apps = []
                for checkout in self.checkouts:
                    if backend == "sqlite":
                        url = f"sqlite:///{self.workdir / f'authsvc-{checkout.name}.db'}"
                    else:
                        url, version = stack.enter_context(postgres_database(self.postgres))
                        self.versions["PostgreSQL"] = version
                    apps.append(stack.enter_context(Authsvc(checkout, backend, url, self.workdir)))
                for scenario, label in SCENARIOS.items():
                    targets = {a.name: (a.server.url, partial(a.prepare, scenario)) for a in apps}
                    self.measure(label, backend, targets)


def best_of(results: list[LoadResult]) -> LoadResult:
    """The fastest run, carrying the failures of every run (a failure must still show)."""
    return dataclasses.replace(
        max(results, key=lambda r: r.rate),
        failures=sum(r.failures for r in results),
        first_failure=next((r.first_failure for r in results if r.first_failure), ""),
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def report(run: Run, started: datetime) -> str:
    names = [c.name for c in run.checkouts]
    lines = [
        f"# authsvc benchmark, {started:%Y-%m-%d %H:%M} UTC ({'quick' if run.quick else 'full'})",
        "",
        *[f"- {c.name}: {c.path} ({c.revision()})" for c in run.checkouts],
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end; "
        + ", ".join(f"{name} {version}" for name, version in run.versions.items()),
        f"- {SETTINGS}; authsvc in production mode, ES256, rate limits off",
        f"- per scenario and checkout a {run.warmup} s warm-up, then the best of "
        f"{run.repeats} runs of {run.seconds} s"
        + (" (the checkouts in turn)" if len(names) > 1 else ""),
        "",
    ]
    ratio = len(names) == 2
    header = ["scenario", "backend", *[f"req/s {n}" for n in names]]
    header += [f"{names[0]}/{names[1]}"] if ratio else []
    header += [f"p50 ms {n}" for n in names] + [f"p99 ms {n}" for n in names] + ["failures"]
    lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    notes = []
    for scenario, backend, results in run.rows:
        rs = [results[n] for n in names]
        cells = [scenario, backend, *[f"{r.rate:,.0f}" for r in rs]]
        cells += [f"{rs[0].rate / rs[1].rate:.2f}" if rs[1].rate else "—"] if ratio else []
        cells += [f"{r.p50_ms:.2f}" for r in rs] + [f"{r.p99_ms:.2f}" for r in rs]
        lines.append("| " + " | ".join([*cells, " / ".join(str(r.failures) for r in rs)]) + " |")
        notes += [
            f"- {scenario} on {backend} ({name}): {r.failures} failed requests, the first: "
            f"{r.first_failure[:200]}"
            for name, r in zip(names, rs, strict=True)
            if r.failures
        ]
    if notes:
        lines += ["", "Failures (non-2xx answers, socket errors, timeouts):", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    started = datetime.now(UTC)
    try:
        run = Run.from_env(dict(os.environ))
        if len({c.own_authsvc() for c in run.checkouts}) < len(run.checkouts):
            raise BenchError("the checkouts compared run the same authsvc package")
        banner = subprocess.run([run.wrk, "-v"], capture_output=True, text=True).stdout.split()
        run.versions = {"Python": platform.python_version(), "SQLite": sqlite3.sqlite_version}
        run.versions["wrk"] = banner[1] if len(banner) > 1 else "?"
        print(f"bench: {', '.join(f'{c.name} = {c.path}' for c in run.checkouts)}", flush=True)
        with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
            run.workdir = Path(tmp)
            run.bench()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    text = report(run, started)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    print(f"\n{text}\n(also written to {RESULTS / 'latest.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
