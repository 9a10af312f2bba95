"""`flask --app wsgi create-user`."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from ..db import get_session
from ..errors import AuthError


@click.command("create-user")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.password_option(help="Prompted for (twice) when not given.")
def create_user_command(email: str, name: str | None, password: str) -> None:
    """Create a user account (the password policy applies)."""
    from ..services.accounts import create_user

    db = get_session()
    try:
        user = create_user(db, current_app.extensions["authsvc"], email, password, name)
    except AuthError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"created user {user.id} <{user.email}>")


COMMANDS = (create_user_command,)
