"""`flask --app wsgi keys …`: signing keys."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.group("keys")
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("generate")
@click.option("--algorithm", type=click.Choice(["ES256", "EdDSA", "RS256"]), default="ES256")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def generate_key_command(algorithm: str, out: Path) -> None:
    """Write a new private signing key (PEM, mode 0600) for JWT_PRIVATE_KEY_FILE."""
    from ..security.jwt import SigningKey, generate_private_key, private_key_pem

    private_key = generate_private_key(algorithm)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(private_key))
    key = SigningKey.from_private_key(private_key)
    click.echo(f"wrote {algorithm} key {key.kid} to {out}")


COMMANDS = (keys_group,)
