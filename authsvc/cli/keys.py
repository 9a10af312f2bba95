"""`flask --app wsgi keys …`: signing keys (rotate, list, revoke, generate a PEM file)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from ..config import ConfigError
from ..db import get_engine, get_session
from ..errors import AuthError


@click.group("keys", cls=AppGroup)
def keys_group() -> None:
    """Signing keys."""


def _runtime():
    return current_app.extensions["authsvc"]


@keys_group.command("rotate")
@click.option(
    "--algorithm",
    type=click.Choice(["ES256", "EdDSA", "RS256"]),
    default=None,
    help="Defaults to JWT_ALGORITHM.",
)
@click.option(
    "--prepublish",
    type=click.IntRange(min=0),
    default=None,
    help="Seconds the key is published before it signs (default JWT_KEY_PREPUBLISH).",
)
def rotate_command(algorithm: str | None, prepublish: int | None) -> None:
    """Add a new signing key: published now, signing after the pre-publication time."""
    from ..services.keys import rotate_key

    rt = _runtime()
    try:
        record = rotate_key(
            get_session(), rt.settings, rt.clock(), algorithm=algorithm, prepublish=prepublish
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"created {record.alg} key {record.kid}; signs from {record.activates_at.isoformat()}"
    )


@keys_group.command("list")
def list_command() -> None:
    """Show every key and its state (pending, active, retired, expired, revoked)."""
    from ..services.keys import list_keys

    rt = _runtime()
    states = list_keys(get_engine(), rt.settings, rt.clock())
    if not states:
        click.echo("no signing keys in the database")
    for state in states:
        until = (
            f" published until {state.published_until.isoformat()}" if state.published_until else ""
        )
        dev = " (development)" if state.development else ""
        click.echo(
            f"{state.kid}  {state.alg:6}  {state.state:8}  created {state.created_at.isoformat()}"
            f"  signs from {state.activates_at.isoformat()}{until}{dev}"
        )


# RFC 7638 thumbprints and generated ids are base64url, so one may start with "-": taken
# as the argument, not refused as an unknown option.
@keys_group.command("revoke", context_settings={"ignore_unknown_options": True})
@click.argument("kid")
@click.confirmation_option(
    prompt="Tokens signed with this key will be refused within 2 seconds. Revoke it?"
)
def revoke_command(kid: str) -> None:
    """Withdraw a key (for a leaked key): every worker of every instance sharing this
    database refuses its tokens within 2 seconds (services/keys.py, VERSION_CHECK_INTERVAL)."""
    from ..services.keys import revoke_key

    try:
        revoke_key(get_session(), kid, _runtime().clock())
    except AuthError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked {kid}; every worker refuses its tokens within 2 seconds")


@keys_group.command("generate")
@click.option("--algorithm", type=click.Choice(["ES256", "EdDSA", "RS256"]), default="ES256")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--development",
    is_flag=True,
    help="Mark the key as a development key: production refuses to start with it.",
)
def generate_key_command(algorithm: str, out: Path, development: bool) -> None:
    """Write a new private key (PEM, mode 0600) for JWT_PRIVATE_KEY_FILE (keys kept in files
    rather than in the database; such keys rotate by changing the files and restarting)."""
    from ..security.jwt import DEV_KEY_MARKER, SigningKey, generate_private_key, private_key_pem

    private_key = generate_private_key(algorithm)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write((DEV_KEY_MARKER if development else b"") + private_key_pem(private_key))
    key = SigningKey.from_private_key(private_key)
    kind = "development " if development else ""
    click.echo(f"wrote {algorithm} {kind}key {key.kid} to {out}")


COMMANDS = (keys_group,)
