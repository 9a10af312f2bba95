"""Every mail's words: Jinja2 templates shipped in authsvc/templates/mail, each overridable by
a file of the same name in MAIL_TEMPLATES_DIR.

A mail `name` is three templates: `name.subject.txt` (one line), `name.txt` (the text part)
and `name.html` (the HTML part, autoescaped). Each gets `product_name` (PRODUCT_NAME) beside
its own variables (docs/accounts.md lists them). Rendering happens on the mail thread.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

from . import mail
from .config import Settings

MAIL_NAMES = frozenset(
    {
        "reset_password",
        "verify_email",
        "email_taken",
        "email_change_confirm",
        "email_change_requested",
        "email_changed",
        "refresh_token_reused",
        "password_changed",
        "password_reset_done",
        "new_device",
    }
)


@functools.lru_cache(maxsize=8)
def environment(templates_dir: str) -> Environment:
    """The templates of MAIL_TEMPLATES_DIR (when set) in front of the packaged ones."""
    loaders: list[Any] = [FileSystemLoader(templates_dir)] if templates_dir else []
    loaders.append(PackageLoader("authsvc", "templates/mail"))
    return Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,  # a misspelt variable fails loudly (logged), never blank
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(settings: Settings, name: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """Subject, text and HTML of mail `name`."""
    env = environment(settings.MAIL_TEMPLATES_DIR)
    values = {"product_name": settings.PRODUCT_NAME, **context}
    subject = env.get_template(f"{name}.subject.txt").render(values)
    text = env.get_template(f"{name}.txt").render(values)
    html = env.get_template(f"{name}.html").render(values)
    return " ".join(subject.split()), text, html  # one header line, whatever the template


def send(settings: Settings, name: str, *, to: str, now: datetime, **context: Any) -> str:
    """Queue mail `name` to `to`; the mail thread renders it. Returns its Message-ID."""
    if name not in MAIL_NAMES:
        raise ValueError(f"unknown mail {name!r}")
    return mail.send_mail(
        settings,
        to=to,
        subject=name,
        now=now,
        render=functools.partial(render, settings, name, context),
    )
