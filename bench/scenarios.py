"""authsvc under gunicorn for the benchmark, and what wrk needs for each scenario."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from .harness import CONNECTIONS, WRK_THREADS, BenchError, Server, http_call, migrate

# name: (label in the table, wrk script, ceiling its ratio is taken to)
SCENARIOS = {
    "me": ("GET /me", "static.lua", "hello"),
    "refresh": ("POST /refresh (rotation)", "refresh.lua", "hello"),
    "login": ("POST /login", "static.lua", "argon2"),
    "register": ("POST /register", "register.lua", "hello"),
}


def authsvc_env(workdir: Path, backend: str, database_url: str) -> dict[str, str]:
    """Production mode with a real (generated) key, as a deployment runs; no rate limits."""
    from authsvc.security.jwt import generate_private_key, private_key_pem

    instance = workdir / f"instance-{backend}-{uuid.uuid4().hex[:6]}"
    instance.mkdir()
    key_file = instance / "signing-key.pem"
    key_file.write_bytes(private_key_pem(generate_private_key("ES256")))
    key_file.chmod(0o600)
    return {
        "AUTHSVC_ENV": "production",
        "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(instance),
        "JWT_PRIVATE_KEY_FILE": str(key_file),
        "RATELIMIT_ENABLED": "false",
        "MAIL_OUTBOX_DIR": str(instance / "outbox"),
    }


def _expect(status: int, body: Any, wanted: int, what: str) -> dict[str, Any]:
    if status != wanted or not isinstance(body, dict):
        raise BenchError(f"{what} answered {status}, not {wanted}: {json.dumps(body)[:500]}")
    return body


class Authsvc:
    """authsvc on a migrated database, served by gunicorn, with a known user.

    `with Authsvc(...) as target:` starts it; `target.prepare(scenario, phase)` gives the
    wrk script and environment for one run ("warm" or "run") of a scenario.
    """

    def __init__(
        self,
        backend: str,
        database_url: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.database_url = database_url
        self.workdir = workdir
        self.server = Server(
            f"authsvc-{backend}",
            "wsgi:app",
            {**authsvc_env(workdir, backend, database_url), **(extra_env or {})},
            workdir,
            ready_path="/readyz",
        )
        self.email = f"known-{uuid.uuid4().hex[:8]}@example.com"
        self.password = f"bench {uuid.uuid4().hex} passphrase"
        self.access_token = ""

    def __enter__(self) -> Authsvc:
        migrate(self.database_url, self.workdir)
        self.server.start()
        try:
            status, body = self._post(
                "/api/auth/register", {"email": self.email, "password": self.password}
            )
            self.access_token = _expect(status, body, 201, "registering the bench user")[
                "access_token"
            ]
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return http_call(self.server.port, "POST", path, body)

    def new_sessions(self, count: int) -> list[str]:
        """Log the known user in `count` times; the refresh tokens of the new sessions."""
        tokens = []
        for _ in range(count):
            status, body = self._post(
                "/api/auth/login", {"email": self.email, "password": self.password}
            )
            tokens.append(_expect(status, body, 200, "login")["refresh_token"])
        return tokens

    def prepare(self, scenario: str, phase: str) -> tuple[str, dict[str, str]]:
        script = SCENARIOS[scenario][1]
        if scenario == "me":
            return script, {"BENCH_PATH": "/api/auth/me", "BENCH_BEARER": self.access_token}
        if scenario == "refresh":
            # Fresh sessions, one per connection plus a spare per wrk thread (refresh.lua).
            path = self.workdir / f"refresh-{self.backend}-{phase}-{uuid.uuid4().hex[:6]}.txt"
            path.write_text("\n".join(self.new_sessions(CONNECTIONS + WRK_THREADS)) + "\n")
            return script, {"BENCH_TOKENS_FILE": str(path)}
        if scenario == "login":
            body = json.dumps({"email": self.email, "password": self.password})
            return script, {
                "BENCH_METHOD": "POST",
                "BENCH_PATH": "/api/auth/login",
                "BENCH_BODY": body,
            }
        if scenario == "register":
            return script, {
                "BENCH_RUN_ID": f"{phase}{uuid.uuid4().hex[:6]}",
                "BENCH_PASSWORD": self.password,
            }
        raise ValueError(f"unknown scenario {scenario!r}")
