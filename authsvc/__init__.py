"""authsvc: JWT access tokens and rotating refresh tokens for Flask shops."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from flask import Flask

from .config import load_settings
from .runtime import Clock, Runtime, system_clock

# Installed, the migrations ship inside the package (setup.py); in a checkout they are the
# top-level migrations/ directory.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
if not MIGRATIONS_DIR.is_dir():
    MIGRATIONS_DIR = MIGRATIONS_DIR.parent.parent / "migrations"


def schema_head() -> str:
    """The Alembic head revision this code expects the database to be at."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def create_app(config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the app. `config` overrides the environment; `clock` replaces the system clock."""
    from . import cli, db, metrics
    from .api import init_api
    from .logs import configure_logging, init_request_ids
    from .security.jwt import static_keyset
    from .security.passwords import Passwords
    from .services.keys import KeyRing

    app = Flask(__name__)
    settings = load_settings(config, instance_path=app.instance_path)
    configure_logging(settings.LOG_LEVEL)
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_CONTENT_LENGTH
    app.config["AUTHSVC_SETTINGS"] = settings
    init_request_ids(app)  # first, so that every later hook and log line has the id
    metrics.init_app(app)

    engine = db.make_engine(settings.DATABASE_URL, pool_size=settings.DATABASE_POOL_SIZE)
    db.init_app(app, engine)
    clock = clock or system_clock
    keys = static_keyset(settings)
    if keys is None:  # the default: keys shared through the database, rotated by the CLI
        keys = KeyRing(engine, settings, clock)
        # Serving without a key is refused; the CLI (which creates keys) may start anyway.
        try:
            keys.check_startup(refuse_without_key=click.get_current_context(silent=True) is None)
        except Exception:
            engine.dispose()
            raise
    app.extensions["authsvc"] = Runtime(
        settings=settings,
        keys=keys,
        passwords=Passwords(
            settings.ARGON2_MEMORY_COST,
            settings.ARGON2_TIME_COST,
            settings.ARGON2_PARALLELISM,
            concurrency=settings.ARGON2_CONCURRENCY,
            slot_dir=Path(settings.INSTANCE_PATH) / "argon2-slots",
        ),
        clock=clock,
    )
    app.extensions["authsvc_schema_head"] = schema_head()
    init_api(app)
    cli.init_app(app)
    return app
