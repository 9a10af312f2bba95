"""In production authsvc refuses to start with a development key, a short HS256 secret, no
DATABASE_URL or no PUBLIC_URL, and says exactly why: create_app, gunicorn and the flask CLI
alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authsvc import create_app
from authsvc.config import ConfigError
from conftest import ROOT, free_port

BIN = Path(sys.executable).parent
SECRET = "a-secret-of-at-least-thirty-two-bytes!"


@pytest.fixture
def production(base_config):
    """Production settings that start; each test breaks exactly one thing."""
    return {
        **base_config,
        "AUTHSVC_ENV": "production",
        "JWT_ALGORITHM": "HS256",
        "JWT_SECRET": SECRET,
        "FRONTEND_URL": "https://app.example.org",
        "PUBLIC_URL": "https://auth.example.org",
    }


@pytest.fixture
def dev_key_file(app, tmp_path):
    path = tmp_path / "dev-signing-key-es256.pem"
    result = app.test_cli_runner().invoke(
        args=["keys", "generate", "--development", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    return str(path)


def _broken(production, dev_key_file, what):
    settings = dict(production)
    if what == "development key":
        settings.update(JWT_ALGORITHM="ES256", JWT_SECRET="", JWT_PRIVATE_KEY_FILE=dev_key_file)
    elif what == "short secret":
        settings["JWT_SECRET"] = "x" * 31
    elif what == "no database":
        settings["DATABASE_URL"] = ""
    elif what == "no public URL":
        del settings["PUBLIC_URL"]
    return settings


REASONS = {
    "development key": "names a development key",
    "short secret": "JWT_SECRET must be at least 32 bytes",
    "no database": "DATABASE_URL must be set in production",
    "no public URL": "PUBLIC_URL must be set in production",
}


def test_production_settings_that_are_right_start(production):
    app = create_app(production)
    app.extensions["authsvc_db"][0].dispose()


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
@pytest.mark.parametrize("what", list(REASONS))
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
