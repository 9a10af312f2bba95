"""The checkouts under test, the servers made from them, and what wrk sends in each scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization as pem
from cryptography.hazmat.primitives.asymmetric import ec

from .harness import CONNECTIONS, THREADS, WORKERS, WRK_THREADS, BenchError, Server, http_call

BENCH_DIR = Path(__file__).resolve().parent
SCENARIOS = {"me": "GET /me", "refresh": "POST /refresh (rotation)", "login": "POST /login"}
Prepared = tuple[str, dict[str, str]]  # a wrk script and its environment


@dataclass(frozen=True)
class Checkout:
    """A working copy of authsvc; its servers run in it, with its code on PYTHONPATH."""

    name: str  # "this" or "other"
    path: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            PYTHONPATH=str(self.path),
            WEB_CONCURRENCY=str(WORKERS),
            GUNICORN_THREADS=str(THREADS),
            AUTHSVC_GUNICORN_PROFILE="bench",  # for a gunicorn.conf.py that knows it
            GUNICORN_ACCESS_LOG="off",
        )
        if self.name != "this":  # the checkout compared against is only read, not cached into
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env | extra

    def revision(self) -> str:
        git = ["git", "-C", str(self.path), "describe", "--always", "--dirty"]
        done = subprocess.run(git, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "not a git checkout"

    def own_authsvc(self) -> Path:
        """The authsvc package its servers import, which must be its own (not one installed)."""
        if not (self.path / "wsgi.py").is_file():
            raise BenchError(f"{self.path} is not a checkout of authsvc")
        code = "import authsvc; print(authsvc.__file__)"
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=self.path, env=self.env(), capture_output=True
        )
        module = Path(done.stdout.decode().strip()).resolve()
        if done.returncode != 0 or not module.is_relative_to(self.path.resolve()):
            raise BenchError(f"{self.path} does not import its own authsvc:\n{done!r}")
        return module


def hello_server(checkout: Checkout, workdir: Path) -> Server:
    """The ceiling: bench/ceilings.py's bare Flask app under the checkout's gunicorn.conf.py."""
    env = checkout.env(
        PYTHONPATH=os.pathsep.join([str(checkout.path), str(BENCH_DIR)]),
        INSTANCE_PATH=str(workdir / f"hello-{checkout.name}"),
    )
    log = workdir / f"gunicorn-hello-{checkout.name}.log"
    return Server("ceilings:app", checkout.path, env, log, ready="/")


def prepare_hello() -> Prepared:
    return "static.lua", {"BENCH_PATH": "/"}


class Authsvc:
    """authsvc from one checkout on a freshly migrated database, with one known user.

    `with Authsvc(...) as app:` serves it; `app.prepare(scenario)` gives one wrk run's script
    and environment.
    """

    def __init__(self, checkout: Checkout, backend: str, database_url: str, workdir: Path):
        self.checkout, self.database_url, self.workdir = checkout, database_url, workdir
        self.name, self.tag = checkout.name, f"{checkout.name}-{backend}"
        instance = workdir / f"instance-{self.tag}"
        instance.mkdir()
        key = ec.generate_private_key(ec.SECP256R1())
        key_file = instance / "signing-key.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(pem.Encoding.PEM, pem.PrivateFormat.PKCS8, pem.NoEncryption())
        )
        # Production mode with a real key, as a deployment runs; no rate limits, local mail
        # and a local front end: the production guard's waivers (a checkout without the
        # guard ignores the setting).
        waived = ["rate_limits_off", "outbox_mail", "frontend_url"]
        if backend == "sqlite":
            waived.append("sqlite")
        self.env = checkout.env(
            AUTHSVC_ENV="production",
            PRODUCTION_ALLOW_UNSAFE=",".join(waived),
            PUBLIC_URL="https://authsvc.bench.example",
            DATABASE_URL=database_url,
            INSTANCE_PATH=str(instance),
            JWT_PRIVATE_KEY_FILE=str(key_file),
            RATELIMIT_ENABLED="false",
            MAIL_OUTBOX_DIR=str(instance / "outbox"),
        )
        log = workdir / f"gunicorn-{self.tag}.log"
        self.server = Server("wsgi:app", checkout.path, self.env, log, ready="/readyz")
        self.user = {
            "email": f"known-{uuid.uuid4().hex[:8]}@example.com",
            "password": f"bench {uuid.uuid4().hex} passphrase",
        }

    def __enter__(self) -> Authsvc:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={self.database_url}", "upgrade", "head"],
            cwd=self.checkout.path,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"{self.tag}: alembic upgrade head failed:\n{done.stderr[-2000:]}")
        self.server.__enter__()
        try:
            self.call("/api/auth/register", 201)
        except BaseException:
            self.server.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__()

    def call(self, path: str, wanted: int) -> dict[str, Any]:
        status, body = http_call(self.server.port, path, self.user)
        if status != wanted or not isinstance(body, dict):
            answer = json.dumps(body)[:500]
            raise BenchError(f"{self.tag}: {path} answered {status}, not {wanted}: {answer}")
        return body

    def prepare(self, scenario: str) -> Prepared:
        if scenario == "me":  # a session just opened: its access token lives through the run
            token = self.call("/api/auth/login", 200)["access_token"]
            return "static.lua", {"BENCH_PATH": "/api/auth/me", "BENCH_BEARER": token}
        if scenario == "refresh":  # new sessions: one per connection, a spare per wrk thread
            logins = range(CONNECTIONS + WRK_THREADS)
            tokens = [self.call("/api/auth/login", 200)["refresh_token"] for _ in logins]
            path = self.workdir / f"refresh-{self.tag}-{uuid.uuid4().hex[:6]}.txt"
            path.write_text("\n".join(tokens) + "\n")
            return "refresh.lua", {"BENCH_TOKENS_FILE": str(path)}
        if scenario == "login":
            login = {"BENCH_METHOD": "POST", "BENCH_PATH": "/api/auth/login"}
            return "static.lua", {**login, "BENCH_BODY": json.dumps(self.user)}
        raise ValueError(f"unknown scenario {scenario!r}")
