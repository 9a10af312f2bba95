"""`pip install .` into a fresh virtualenv gives a working `authsvc` command: from a directory
outside the checkout it migrates a new database and serves it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CHEAP_ARGON2, PASSWORD, ROOT, free_port

pytestmark = pytest.mark.slow

# What a checkout holds that is no part of the package (nor of its build).
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", "instance", "build", "*.egg-info", ".*_cache"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with authsvc installed from (a copy of) this checkout; its bin/."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return venv / "bin"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    assert ROOT not in directory.parents
    return directory


def environment(workdir: Path, **extra: str) -> dict[str, str]:
    """The machine's environment minus anything that would point back at the checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "TEST_DATABASE_URL", "DATABASE_URL"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'authsvc.db'}",
        INSTANCE_PATH=str(workdir / "instance"),
        RATELIMIT_ENABLED="false",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="2",
        GUNICORN_ACCESS_LOG="off",
        **{key: str(value) for key, value in CHEAP_ARGON2.items()},
        **extra,
    )
    return env


def run(bin_dir: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "authsvc"), *args],
        cwd=workdir,
        env=environment(workdir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def request(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@contextlib.contextmanager
def serving(bin_dir: Path, workdir: Path) -> Iterator[str]:
    """`authsvc serve` on a free port, until the block ends; its URL."""
    port = free_port()
    env = environment(workdir, AUTHSVC_BIND=f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [str(bin_dir / "authsvc"), "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            try:
                if request(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "authsvc serve did not answer within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def test_the_package_carries_its_migrations_and_gunicorn_settings(installed, workdir):
    code = "import authsvc, sys; print(authsvc.__file__); print(authsvc.MIGRATIONS_DIR)"
    result = subprocess.run(
        [str(installed / "python"), "-c", code],
        cwd=workdir,
        env=environment(workdir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module, migrations = (Path(line) for line in result.stdout.split())
    venv = installed.parent
    assert venv in module.parents  # the installed copy, not the checkout
    assert venv in migrations.parents
    assert (module.parent / "gunicorn.conf.py").is_file()
    help_text = run(installed, workdir, "--help").stdout
    for command in ("serve", "migrate", "keys", "clients", "users", "purge-tokens"):
        assert command in help_text


def test_installed_command_migrates_and_serves_outside_the_checkout(installed, workdir):
    migrated = run(installed, workdir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "Running upgrade" in migrated.stderr
    assert (workdir / "authsvc.db").is_file()

    created = run(
        installed, workdir, "users", "create", "--email", "ops@example.com", "--password", PASSWORD
    )
    assert created.returncode == 0, created.stderr
    keys = run(installed, workdir, "keys", "list")
    assert keys.returncode == 0, keys.stderr
    assert "active" in keys.stdout
    purged = run(installed, workdir, "purge-tokens", "--dry-run")
    assert purged.returncode == 0, purged.stderr
    clients = run(installed, workdir, "clients", "list")
    assert clients.returncode == 0, clients.stderr


def test_register_through_authsvc_serve(installed, workdir):
    assert run(installed, workdir, "migrate").returncode == 0
    with serving(installed, workdir) as url:
        status, body = request(f"{url}/readyz")
        assert status == 200, body  # the schema is at the packaged migrations' head
        status, pair = request(
            f"{url}/api/auth/register", {"email": "first@example.com", "password": PASSWORD}
        )
        assert status == 201, pair
        status, problem = request(
            f"{url}/api/auth/register", {"email": "first@example.com", "password": PASSWORD}
        )
        assert (status, problem["code"]) == (409, "email_taken")
