"""In production authsvc refuses to start with unsafe settings and says exactly why: a
development key, a short HS256 secret, no DATABASE_URL or PUBLIC_URL, outbox mail, a
localhost or plain-http FRONTEND_URL, SMTP in clear to a remote host, rate limits off or per
process, argon2 below OWASP's minimum, SQLite, a guessable key-encryption key — create_app,
gunicorn and the flask CLI alike. docs/production.md lists the same checks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from authsvc import create_app
from authsvc.config import ConfigError, load_settings
from conftest import ROOT, STRONG_KEK, free_port, production_settings

BIN = Path(sys.executable).parent
SECRET = "a-secret-of-at-least-thirty-two-bytes!"


@pytest.fixture
def production(base_config):
    """Production settings that start; each test breaks exactly one thing."""
    return {
        **base_config,
        **production_settings(base_config["DATABASE_URL"]),
        "JWT_ALGORITHM": "HS256",
        "JWT_SECRET": SECRET,
    }


@pytest.fixture
def dev_key_file(app, tmp_path):
    path = tmp_path / "dev-signing-key-es256.pem"
    result = app.test_cli_runner().invoke(
        args=["keys", "generate", "--development", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    return str(path)


# What breaks the settings, and the reason the start is refused with.
BREAKAGES = {
    "development key": (
        {"JWT_ALGORITHM": "ES256", "JWT_SECRET": ""},
        "names a development key",
    ),
    "short secret": ({"JWT_SECRET": "x" * 31}, "JWT_SECRET must be at least 32 bytes"),
    "no database": ({"DATABASE_URL": ""}, "DATABASE_URL must be set in production"),
    "no public URL": ({"PUBLIC_URL": ""}, "PUBLIC_URL must be set in production"),
    "outbox mail": ({"MAIL_BACKEND": "outbox"}, "MAIL_BACKEND=outbox writes live"),
    "localhost frontend": (
        {"FRONTEND_URL": "https://localhost:3000"},
        "FRONTEND_URL must not point at localhost",
    ),
    "loopback frontend": (
        {"FRONTEND_URL": "https://127.0.0.1"},
        "FRONTEND_URL must not point at localhost",
    ),
    "plain-http frontend": (
        {"FRONTEND_URL": "http://app.example.org"},
        "FRONTEND_URL must be https://",
    ),
    "smtp in clear to a remote host": (
        {"SMTP_HOST": "smtp.example.org", "SMTP_TLS": "none"},
        "SMTP_TLS=none would send reset links in clear to smtp.example.org",
    ),
    "rate limits off": ({"RATELIMIT_ENABLED": False}, "RATELIMIT_ENABLED=false leaves login"),
    "memory rate limits": (
        {"RATELIMIT_STORAGE_URI": "memory://", "WEB_CONCURRENCY": 4},
        "RATELIMIT_STORAGE_URI=memory:// keeps limits per process",
    ),
    "memory rate limits waived with several workers": (
        {
            "RATELIMIT_STORAGE_URI": "memory://",
            "WEB_CONCURRENCY": 4,
            "PRODUCTION_ALLOW_UNSAFE": "memory_rate_limits,sqlite",
        },
        "memory:// may be waived only with one worker",
    ),
    "argon2 at m=8 KiB t=1": (
        {"ARGON2_MEMORY_COST": 8, "ARGON2_TIME_COST": 1, "PRODUCTION_ALLOW_UNSAFE": "sqlite"},
        "argon2id m=8 KiB t=1 is below OWASP's minimum",
    ),
    "argon2 at m=19 MiB t=1": (
        {"ARGON2_MEMORY_COST": 19456, "ARGON2_TIME_COST": 1, "PRODUCTION_ALLOW_UNSAFE": "sqlite"},
        "argon2id m=19456 KiB t=1 is below OWASP's minimum",
    ),
    "sqlite": (
        {"DATABASE_URL": "sqlite:///instance/prod.db", "PRODUCTION_ALLOW_UNSAFE": "argon2"},
        "DATABASE_URL is SQLite",
    ),
    "32 x a key-encryption key": (
        {"JWT_KEY_ENCRYPTION_KEY": "a" * 32},
        "JWT_KEY_ENCRYPTION_KEY looks guessable",
    ),
    "sequential key-encryption key": (
        {"JWT_KEY_ENCRYPTION_KEY": "abcdefghijklmnopqrstuvwxyz012345"},
        "JWT_KEY_ENCRYPTION_KEY looks guessable",
    ),
    "unknown waiver": ({"PRODUCTION_ALLOW_UNSAFE": "sqlite,everything"}, "unknown checks"),
}
REASONS = {what: reason for what, (_, reason) in BREAKAGES.items()}


def _broken(production, dev_key_file, what):
    settings = {**production, **BREAKAGES[what][0]}
    if what == "development key":
        settings["JWT_PRIVATE_KEY_FILE"] = dev_key_file
    return settings


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def guard_log():
    records = _Records()
    logger = logging.getLogger("authsvc.production")
    logger.addHandler(records)
    yield records.messages
    logger.removeHandler(records)


def test_production_settings_that_are_right_start(production, guard_log):
    settings = {
        **production,
        "ARGON2_MEMORY_COST": 19456,
        "ARGON2_TIME_COST": 2,
        "JWT_KEY_ENCRYPTION_KEY": STRONG_KEK,
        "PRODUCTION_ALLOW_UNSAFE": "sqlite"
        if production["DATABASE_URL"].startswith("sqlite")
        else "",
    }
    app = create_app(settings)
    app.extensions["authsvc_db"][0].dispose()
    assert all("SQLite" in message for message in guard_log), guard_log


@pytest.mark.parametrize(
    ("memory", "time_cost"), [(47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)]
)
def test_each_row_of_owasps_argon2_table_is_accepted(production, memory, time_cost):
    settings = {
        **production,
        "ARGON2_MEMORY_COST": memory,
        "ARGON2_TIME_COST": time_cost,
        "PRODUCTION_ALLOW_UNSAFE": "sqlite",
    }
    loaded = load_settings(settings)
    got = (loaded.ARGON2_MEMORY_COST, loaded.ARGON2_TIME_COST)
    assert got == (memory, time_cost)


def test_smtp_without_tls_is_allowed_to_a_relay_on_this_host(production):
    for host in ("localhost", "127.0.0.1", "::1"):
        assert load_settings({**production, "SMTP_HOST": host}).SMTP_TLS == "none"


def test_memory_rate_limits_with_one_worker_start_when_waived_and_say_so(production, guard_log):
    app = create_app(
        {
            **production,
            "RATELIMIT_STORAGE_URI": "memory://",
            "WEB_CONCURRENCY": 1,
            "PRODUCTION_ALLOW_UNSAFE": production["PRODUCTION_ALLOW_UNSAFE"]
            + ",memory_rate_limits",
        }
    )
    app.extensions["authsvc_db"][0].dispose()
    assert any("memory:// keeps limits per process" in m and "waived" in m for m in guard_log)


@pytest.mark.parametrize("what", list(REASONS))
def test_create_app_refuses_with_the_reason(production, dev_key_file, what):
    with pytest.raises(ConfigError) as info:
        create_app(_broken(production, dev_key_file, what))
    assert REASONS[what] in str(info.value)


def _env(settings: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    for key, value in settings.items():
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


STARTERS = {
    "gunicorn": lambda: [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"],
    "flask": lambda: [str(BIN / "flask"), "--app", "wsgi", "routes"],
}


@pytest.mark.slow
@pytest.mark.parametrize("starter", list(STARTERS))
@pytest.mark.parametrize(
    "what", ["development key", "no database", "outbox mail", "32 x a key-encryption key"]
)
def test_start_is_refused_with_the_reason(production, dev_key_file, what, starter):
    result = subprocess.run(
        STARTERS[starter](),
        cwd=ROOT,
        env=_env(_broken(production, dev_key_file, what)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert REASONS[what] in result.stderr
