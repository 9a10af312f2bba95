"""`python -m fuzz` (`make fuzz`): schemathesis against authsvc's own OpenAPI document.

Starts authsvc under gunicorn (gunicorn.conf.py, 2 workers) on a fresh, migrated SQLite
database, registers a user whose fresh access token every case that needs one gets, creates
a service client whose credentials every /introspect case sends (fuzz/hooks.py), and runs
schemathesis on /api/openapi.json with the checks: no 5xx, documented status codes, content
types and headers, and responses that match their documented schema. Bounded:
FUZZ_MAX_EXAMPLES cases per operation (default 30) and FUZZ_MAX_TIME seconds in all
(default 90). FUZZ_SEED makes a run repeatable. Rate limits are off
(RATELIMIT_ENABLED=false): with them on, most generated requests would be answered 429 and
never reach the code under test; tests/test_rate_limits.py covers them. gunicorn's
request-line limit is lifted so that every generated request reaches
authsvc. Exits with schemathesis's status; the server's log follows a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
EMAIL = "fuzz@example.com"
PASSWORD = "schemathesis probes every corner"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _migrate(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")


def _call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("fuzz: gunicorn exited during start")
        try:
            if _call(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("fuzz: authsvc was not ready within 60 s")


def _create_client(env: dict[str, str]) -> tuple[str, str]:
    """A service client for /introspect (HTTP Basic), made as an operator would: the CLI."""
    done = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", "clients", "create", "--name", "fuzz"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    fields = dict(
        line.split(":", 1) for line in done.stdout.splitlines() if line.startswith("client_")
    )
    if done.returncode != 0 or set(fields) != {"client_id", "client_secret"}:
        raise SystemExit(f"fuzz: could not create the introspection client: {done.stderr}")
    return fields["client_id"].strip(), fields["client_secret"].strip()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="authsvc-fuzz-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'authsvc.db'}"
        _migrate(url)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        env = {
            **{k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"},
            "AUTHSVC_ENV": "development",
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(Path(tmp) / "instance"),
            "RATELIMIT_ENABLED": "false",
            # Cheap argon2: the run measures behaviour, not hashing.
            "ARGON2_MEMORY_COST": "64",
            "ARGON2_TIME_COST": "1",
            "LOG_LEVEL": "WARNING",
            "GUNICORN_ACCESS_LOG": "off",
        }
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "-c",
                    "gunicorn.conf.py",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    # Let every generated request reach authsvc: by default gunicorn answers a
                    # request line over 4094 bytes itself, with an HTML 400 page.
                    "--limit-request-line",
                    "0",
                    "wsgi:app",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(base, server)
            status, pair = _call(
                f"{base}/api/auth/register", {"email": EMAIL, "password": PASSWORD}
            )
            if status != 201:
                raise SystemExit(f"fuzz: could not register the fuzz user ({status}: {pair})")
            client_id, client_secret = _create_client(env)
            command_line = [
                str(BIN / "schemathesis"),
                "run",
                f"{base}/api/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                os.environ.get("FUZZ_MAX_EXAMPLES", "30"),
                "--max-time",
                os.environ.get("FUZZ_MAX_TIME", "90"),
                "--request-timeout",
                "10",
                "--workers",
                "2",
                "--no-color",
            ]
            if os.environ.get("FUZZ_SEED"):
                command_line += ["--seed", os.environ["FUZZ_SEED"]]
            started = time.monotonic()
            hooks_env = {
                **env,
                "PYTHONPATH": str(ROOT),
                "SCHEMATHESIS_HOOKS": "fuzz.hooks",
                "FUZZ_BASE_URL": base,
                "FUZZ_EMAIL": EMAIL,
                "FUZZ_PASSWORD": PASSWORD,
                "FUZZ_CLIENT_ID": client_id,
                "FUZZ_CLIENT_SECRET": client_secret,
            }
            result = subprocess.run(command_line, cwd=tmp, env=hooks_env, check=False)
            print(f"fuzz: schemathesis finished in {time.monotonic() - started:.0f} s")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if result.returncode != 0:
            print("fuzz: server log (last 60 lines):")
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-60:]))
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
