"""What the services need from the app, built once at start: settings, keys, hasher, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .config import Settings
from .security.jwt import AccessClaims
from .security.passwords import Passwords

Clock = Callable[[], datetime]


class AccessTokenKeys(Protocol):
    """A static KeySet (HS256 secret, PEM files) or the database-backed KeyRing."""

    jwks_max_age: int

    def issue_access_token(
        self, sub: str, sid: str, now: datetime, **extra: Any
    ) -> tuple[str, int]: ...

    def verify_access_token(self, token: str, now: datetime) -> AccessClaims: ...

    def jwks(self) -> dict[str, list[dict[str, str]]]: ...


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    keys: AccessTokenKeys
    passwords: Passwords
    clock: Clock = system_clock
