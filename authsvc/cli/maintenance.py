"""`flask --app wsgi purge-tokens`: delete expired and revoked rows past a retention period."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..db import get_session

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """`90d`, `12h`, `30m`, `45s` or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a duration like 7d, 12h, 30m or 3600", param, ctx)
        number, unit = match.groups()
        return timedelta(seconds=int(number) * _UNITS[unit or "s"])


@click.command("purge-tokens")
@click.option(
    "--retention",
    type=Duration(),
    default="7d",
    show_default=True,
    help="Keep expired or revoked tokens, ended sessions and dead reset tokens this long.",
)
@click.option(
    "--events-retention",
    type=Duration(),
    default="90d",
    show_default=True,
    help="Keep security events this long.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="Rows per delete; each batch is its own short transaction.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@with_appcontext
def purge_tokens_command(
    retention: timedelta, events_retention: timedelta, batch_size: int, dry_run: bool
) -> None:
    """Delete expired and revoked tokens, ended sessions and old security events."""
    from ..services.maintenance import purge

    report = purge(
        get_session(),
        current_app.extensions["authsvc"],
        retention=retention,
        events_retention=events_retention,
        batch_size=batch_size,
        dry_run=dry_run,
    )
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{'dry run: ' if dry_run else ''}cut-off {report.cutoff.isoformat(timespec='seconds')}"
        f", events cut-off {report.events_cutoff.isoformat(timespec='seconds')}"
    )
    for table, count in report.counts.items():
        click.echo(f"{verb} {count:>10} {table}")
    if not dry_run:
        click.echo(f"in {report.batches} batches")


COMMANDS = (purge_tokens_command,)
