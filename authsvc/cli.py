"""Operator commands: `flask --app wsgi create-user`, `flask --app wsgi keys generate`."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import Flask, current_app

from .db import get_session
from .errors import AuthError


def init_app(app: Flask) -> None:
    app.cli.add_command(create_user_command)
    app.cli.add_command(keys_group)


@click.command("create-user")
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.password_option(help="Prompted for (twice) when not given.")
def create_user_command(email: str, name: str | None, password: str) -> None:
    """Create a user account (the password policy applies)."""
    from .services.accounts import create_user

    db = get_session()
    try:
        user = create_user(db, current_app.extensions["authsvc"], email, password, name)
        db.commit()
    except AuthError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"created user {user.id} <{user.email}>")


@click.group("keys")
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("generate")
@click.option("--algorithm", type=click.Choice(["ES256", "EdDSA", "RS256"]), default="ES256")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def generate_key_command(algorithm: str, out: Path) -> None:
    """Write a new private signing key (PEM, mode 0600) for JWT_PRIVATE_KEY_FILE."""
    from .security.jwt import SigningKey, generate_private_key, private_key_pem

    private_key = generate_private_key(algorithm)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(private_key))
    key = SigningKey.from_private_key(private_key)
    click.echo(f"wrote {algorithm} key {key.kid} to {out}")
