"""`flask --app wsgi users …` (and `create-user`): accounts, for operators at a shell.

Every action is the same use case as the admin API's, recorded with details {"by": "cli"}.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from ..db import get_session
from ..errors import AuthError
from ..services.common import ClientInfo

BY_CLI = {"by": "cli"}
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _rt() -> Any:
    return current_app.extensions["authsvc"]


def _fail(exc: AuthError) -> click.ClickException:
    return click.ClickException(exc.detail)


def _plain(account: Any) -> dict[str, Any]:
    values = dataclasses.asdict(account)
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()} | {
        "id": str(account.id)
    }


def _line(account: Any) -> str:
    state = "disabled" if account.disabled else "active"
    verified = "verified" if account.email_verified else "unverified"
    return (
        f"{account.id}  {state:8}  {verified:10}  sessions {account.active_sessions:<3}"
        f"  {account.created_at.isoformat(timespec='seconds')}  {account.email}"
    )


def _find(id_or_email: str) -> Any:
    from ..services.admin import find_account

    try:
        return find_account(get_session(), _rt(), id_or_email)
    except AuthError as exc:
        raise _fail(exc) from None


@click.group("users", cls=AppGroup)
def users_group() -> None:
    """User accounts: list, show, disable, enable, delete, log out, unlock, create."""


def _create(email: str, name: str | None, password: str) -> None:
    from ..services.accounts import create_user

    try:
        user = create_user(get_session(), _rt(), email, password, name)
    except AuthError as exc:
        raise _fail(exc) from None
    click.echo(f"created user {user.id} <{user.email}>")


@click.command("create-user")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.password_option(help="Prompted for (twice) when not given.")
def create_user_command(email: str, name: str | None, password: str) -> None:
    """Create a user account (the password policy applies)."""
    _create(email, name, password)


@users_group.command("create")
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.password_option(help="Prompted for (twice) when not given.")
def create_command(email: str, name: str | None, password: str) -> None:
    """Create a user account (the password policy applies)."""
    _create(email, name, password)


@users_group.command("list")
@click.option("--email", default=None, help="Only emails containing this (any case).")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, 100), default=50, show_default=True)
@JSON_OPTION
def list_command(email: str | None, page: int, per_page: int, as_json: bool) -> None:
    """List accounts, oldest first."""
    from ..services.admin import list_accounts

    items, total = list_accounts(get_session(), _rt(), email, page, per_page)
    if as_json:
        body = {"items": [_plain(a) for a in items], "total": total, "page": page}
        click.echo(json.dumps({**body, "per_page": per_page}))
        return
    for account in items:
        click.echo(_line(account))
    click.echo(f"{total} account(s) in all", err=True)


@users_group.command("show")
@click.argument("id_or_email")
@JSON_OPTION
def show_command(id_or_email: str, as_json: bool) -> None:
    """Show one account (by id or email)."""
    account = _find(id_or_email)
    if as_json:
        click.echo(json.dumps(_plain(account)))
        return
    for key, value in _plain(account).items():
        click.echo(f"{key + ':':20} {value}")


def _act(action: str, id_or_email: str, as_json: bool) -> None:
    from ..services import admin

    account = _find(id_or_email)
    db, rt, nobody = get_session(), _rt(), ClientInfo()
    try:
        if action == "unlock":
            limits = current_app.extensions.get("authsvc_limits")
            throttle = limits.throttle if limits is not None else None
            admin.unlock(db, rt, account.id, throttle, BY_CLI, nobody)
            result: dict[str, Any] = {"unlocked": str(account.id)}
        elif action == "logout":
            result = {"revoked_sessions": admin.logout(db, rt, account.id, BY_CLI, nobody)}
        elif action == "delete":
            admin.delete(db, rt, account.id, BY_CLI, nobody)
            result = {"deleted": str(account.id)}
        else:
            change = admin.disable if action == "disable" else admin.enable
            result = _plain(change(db, rt, account.id, BY_CLI, nobody))
    except AuthError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{action}: {account.email} ({account.id}) " + json.dumps(result))


def _action_command(action: str, help_text: str, confirm: str | None = None) -> None:
    @users_group.command(action, help=help_text)
    @click.argument("id_or_email")
    @JSON_OPTION
    def command(id_or_email: str, as_json: bool) -> None:
        _act(action, id_or_email, as_json)

    if confirm:
        click.confirmation_option(prompt=confirm)(command)


_action_command("disable", "Disable an account: every session ends now, no sign-in until enabled.")
_action_command("enable", "Enable a disabled account.")
_action_command("logout", "End every session of an account.")
_action_command("unlock", "Forget an account's failed logins (login throttle delays end now).")
_action_command(
    "delete",
    "Delete an account (its security events stay, without personal data).",
    confirm="The account and its data will be deleted. Continue?",
)

COMMANDS = (create_user_command, users_group)
