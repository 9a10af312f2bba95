"""Operator commands (`flask --app wsgi …`); one module per family, registered here."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import clients, keys, maintenance, users

    for command in (*users.COMMANDS, *keys.COMMANDS, *clients.COMMANDS, *maintenance.COMMANDS):
        app.cli.add_command(command)
