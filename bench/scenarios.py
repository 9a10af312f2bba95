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

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .harness import CONNECTIONS, THREADS, WORKERS, WRK_THREADS, BenchError, Server, http_call

BENCH_DIR = Path(__file__).resolve().parent
# scenario: its label in the table
SCENARIOS = {"me": "GET /me", "refresh": "POST /refresh (rotation)", "login": "POST /login"}
Prepared = tuple[str, dict[str, str]]  # a wrk script and its environment


@dataclass(frozen=True)
class Checkout:
    """A working copy of authsvc whose code the servers run (cwd and PYTHONPATH)."""

    name: str  # "this" or "other"
    path: Path
    # The checkout compared against is only read: its modules are not cached as .pyc in it.
    write_bytecode: bool = True

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            PYTHONPATH=str(self.path),
            WEB_CONCURRENCY=str(WORKERS),
            GUNICORN_THREADS=str(THREADS),
            AUTHSVC_GUNICORN_PROFILE="bench",  # for a gunicorn.conf.py that knows it
            GUNICORN_ACCESS_LOG="off",
        )
        if not self.write_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env | extra

    def revision(self) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() if done.returncode == 0 else "not a git checkout"

    def authsvc_module(self) -> Path:
        """Where `import authsvc` finds the package with this checkout's cwd and environment."""
        done = subprocess.run(
            [sys.executable, "-c", "import authsvc; print(authsvc.__file__)"],
            cwd=self.path,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"{self.path}: cannot import authsvc:\n{done.stderr[-1500:]}")
        return Path(done.stdout.strip()).resolve()


def check_own_code(checkouts: list[Checkout]) -> None:
    """Each server must run its own checkout's authsvc, not the other's or an installed one."""
    modules = [c.authsvc_module() for c in checkouts]
    for checkout, module in zip(checkouts, modules, strict=True):
        if not module.is_relative_to(checkout.path.resolve()):
            raise BenchError(f"{checkout.path} imports authsvc from {module}, not its own")
    if len(set(modules)) != len(modules):
        raise BenchError("the checkouts compared import the same authsvc package")


def hello_server(checkout: Checkout, workdir: Path) -> Server:
    """The ceiling: bench/ceilings.py's bare Flask app under the checkout's gunicorn.conf.py."""
    env = checkout.env(
        PYTHONPATH=os.pathsep.join([str(checkout.path), str(BENCH_DIR)]),
        INSTANCE_PATH=str(workdir / f"hello-{checkout.name}"),
    )
    log = workdir / f"gunicorn-hello-{checkout.name}.log"
    return Server(f"hello ({checkout.name})", "ceilings:app", checkout.path, env, log, "/")


def prepare_hello() -> Prepared:
    return "static.lua", {"BENCH_PATH": "/"}


class Authsvc:
    """authsvc from one checkout on a freshly migrated database, with one known user.

    `with Authsvc(...) as target:` serves it; `target.prepare(scenario)` gives one wrk run's
    script and environment.
    """

    def __init__(self, checkout: Checkout, backend: str, database_url: str, workdir: Path):
        self.checkout, self.database_url, self.workdir = checkout, database_url, workdir
        self.tag = f"{checkout.name}-{backend}"
        instance = workdir / f"instance-{self.tag}"
        instance.mkdir()
        key_file = instance / "signing-key.pem"
        key = ec.generate_private_key(ec.SECP256R1())
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        # Production mode with a real key, as a deployment runs; no rate limits.
        self.env = checkout.env(
            AUTHSVC_ENV="production",
            DATABASE_URL=database_url,
            INSTANCE_PATH=str(instance),
            JWT_PRIVATE_KEY_FILE=str(key_file),
            RATELIMIT_ENABLED="false",
            MAIL_OUTBOX_DIR=str(instance / "outbox"),
        )
        log = workdir / f"gunicorn-{self.tag}.log"
        self.server = Server(
            f"authsvc ({self.tag})", "wsgi:app", checkout.path, self.env, log, "/readyz"
        )
        self.user = {"email": f"known-{uuid.uuid4().hex[:8]}@example.com"}
        self.user["password"] = f"bench {uuid.uuid4().hex} passphrase"

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> Authsvc:
        migrate = [sys.executable, "-m", "alembic", "-x", f"url={self.database_url}"]
        done = subprocess.run(
            [*migrate, "upgrade", "head"],
            cwd=self.checkout.path,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"{self.tag}: alembic upgrade head failed:\n{done.stderr[-2000:]}")
        self.server.__enter__()
        try:
            self._call("/api/auth/register", 201)
        except BaseException:
            self.server.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__()

    def _call(self, path: str, wanted: int) -> dict[str, Any]:
        status, body = http_call(self.server.port, "POST", path, self.user)
        if status != wanted or not isinstance(body, dict):
            answer = json.dumps(body)[:500]
            raise BenchError(f"{self.tag}: {path} answered {status}, not {wanted}: {answer}")
        return body

    def prepare(self, scenario: str) -> Prepared:
        if scenario == "me":  # a token of a session just opened, live for the whole run
            token = self._call("/api/auth/login", 200)["access_token"]
            return "static.lua", {"BENCH_PATH": "/api/auth/me", "BENCH_BEARER": token}
        if scenario == "refresh":  # new sessions: one per connection, a spare per wrk thread
            tokens = [
                self._call("/api/auth/login", 200)["refresh_token"]
                for _ in range(CONNECTIONS + WRK_THREADS)
            ]
            path = self.workdir / f"refresh-{self.tag}-{uuid.uuid4().hex[:6]}.txt"
            path.write_text("\n".join(tokens) + "\n")
            return "refresh.lua", {"BENCH_TOKENS_FILE": str(path)}
        if scenario == "login":
            body = json.dumps(self.user)
            return "static.lua", {
                "BENCH_METHOD": "POST",
                "BENCH_PATH": "/api/auth/login",
                "BENCH_BODY": body,
            }
        raise ValueError(f"unknown scenario {scenario!r}")
