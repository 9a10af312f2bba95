"""The `authsvc` command of an installed authsvc: serve, migrate, and the operator commands
of `flask --app wsgi …` (keys, clients, users, purge-tokens), none of which needs a checkout."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import ScriptInfo

from .. import MIGRATIONS_DIR, create_app
from ..config import ConfigError, load_settings
from . import clients, keys, maintenance, users

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def gunicorn_config() -> Path:
    """gunicorn.conf.py: shipped inside the installed package (setup.py), at the top of a
    checkout otherwise."""
    packaged = PACKAGE_DIR / "gunicorn.conf.py"
    return packaged if packaged.is_file() else PACKAGE_DIR.parent / "gunicorn.conf.py"


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """authsvc: JWT access tokens and rotating refresh tokens.

    Configuration comes from the environment (DATABASE_URL, AUTHSVC_ENV, …): see the README
    and docs/operations.md."""
    # The flask commands below find the app here, as `flask --app wsgi` would give it them.
    ctx.obj = ScriptInfo(create_app=create_app, set_debug_flag=False)


@main.command("serve", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(gunicorn_args: tuple[str, ...]) -> None:
    """Serve with gunicorn and authsvc's gunicorn settings (AUTHSVC_BIND, WEB_CONCURRENCY,
    GUNICORN_THREADS, …). Extra arguments go to gunicorn, e.g. `authsvc serve --bind …`."""
    argv = [sys.executable, "-m", "gunicorn", "-c", str(gunicorn_config()), *gunicorn_args]
    # gunicorn takes this process over: a supervisor's signals reach its master directly.
    os.execv(sys.executable, [*argv, "authsvc:create_app()"])  # noqa: S606 (no shell)


@main.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Alembic target revision.")
def migrate_command(revision: str) -> None:
    """Bring DATABASE_URL to the newest schema (`alembic upgrade head`, with the migrations
    that ship with this version)."""
    from alembic import command
    from alembic.config import Config

    try:
        # The instance folder create_app() would use, for the default SQLite file.
        settings = load_settings(instance_path=Flask("authsvc").instance_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    # Alembic's "Running upgrade …" lines, as `alembic upgrade` prints them.
    alembic_logger = logging.getLogger("alembic")
    if not any(type(h) is logging.StreamHandler for h in alembic_logger.handlers):
        alembic_logger.addHandler(logging.StreamHandler(sys.stderr))
    alembic_logger.setLevel(logging.INFO)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = settings.DATABASE_URL
    command.upgrade(config, revision)


@click.group("users")
def users_group() -> None:
    """User accounts."""


users_group.add_command(users.create_user_command, "create")

for _command in (*keys.COMMANDS, *clients.COMMANDS, *maintenance.COMMANDS, users_group):
    main.add_command(_command)
