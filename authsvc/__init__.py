"""authsvc: JWT access tokens and rotating refresh tokens for Flask shops."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from .config import load_settings
from .runtime import Clock, Runtime, system_clock

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def schema_head() -> str:
    """The Alembic head revision this code expects the database to be at."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def create_app(config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the app. `config` overrides the environment; `clock` replaces the system clock."""
    from . import cli, db
    from .api import init_api
    from .logs import configure_logging
    from .security.jwt import keyset_from_settings
    from .security.passwords import Passwords

    app = Flask(__name__)
    settings = load_settings(config, instance_path=app.instance_path)
    configure_logging(settings.LOG_LEVEL)
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_CONTENT_LENGTH
    app.config["AUTHSVC_SETTINGS"] = settings

    db.init_app(app, db.make_engine(settings.DATABASE_URL, pool_size=settings.DATABASE_POOL_SIZE))
    app.extensions["authsvc"] = Runtime(
        settings=settings,
        keys=keyset_from_settings(settings),
        passwords=Passwords(
            settings.ARGON2_MEMORY_COST, settings.ARGON2_TIME_COST, settings.ARGON2_PARALLELISM
        ),
        clock=clock or system_clock,
    )
    app.extensions["authsvc_schema_head"] = schema_head()
    init_api(app)
    cli.init_app(app)
    return app
