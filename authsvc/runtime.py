"""What the services need from the app, built once at start: settings, keys, hasher, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .config import Settings
from .security.jwt import KeySet
from .security.passwords import Passwords

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    keys: KeySet
    passwords: Passwords
    clock: Clock = system_clock
