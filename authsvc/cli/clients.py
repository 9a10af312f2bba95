"""`flask --app wsgi clients …`: service clients allowed to introspect tokens."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from ..db import get_session
from ..errors import AuthError


@click.group("clients", cls=AppGroup)
def clients_group() -> None:
    """Service clients (token introspection)."""


@clients_group.command("create")
@click.option("--name", required=True, help="Which service this client is, for people.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["introspect", "admin"]),
    help="What the client may do (repeatable; default: introspect).",
)
def create_command(name: str, scopes: tuple[str, ...]) -> None:
    """Register a client and print its id and secret (the secret is shown only once)."""
    from ..services.clients import create_client

    try:
        client, secret = create_client(
            get_session(), current_app.extensions["authsvc"], name, scopes or ("introspect",)
        )
    except AuthError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"client_id:     {client.id}")
    click.echo(f"client_secret: {secret}")
    click.echo(f"scopes:        {client.scopes}")
    click.echo("Store the secret now: only its hash is kept.", err=True)


@clients_group.command("list")
def list_command() -> None:
    """Show the registered clients."""
    from ..services.clients import list_clients

    for client in list_clients(get_session()):
        state = "revoked" if client.revoked_at else "active"
        click.echo(
            f"{client.id}  {state:7}  {client.created_at.isoformat()}  {client.name}"
            f"  [{client.scopes}]"
        )


# RFC 7638 thumbprints and generated ids are base64url, so one may start with "-": taken
# as the argument, not refused as an unknown option.
@clients_group.command("revoke", context_settings={"ignore_unknown_options": True})
@click.argument("client_id")
def revoke_command(client_id: str) -> None:
    """Withdraw a client's access at once."""
    from ..services.clients import revoke_client

    try:
        revoke_client(get_session(), current_app.extensions["authsvc"], client_id)
    except AuthError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked {client_id}")


COMMANDS = (clients_group,)
