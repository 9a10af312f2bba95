"""Values passed between the API layer and the use cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ..models import USER_AGENT_MAX


@dataclass(frozen=True)
class UserInfo:
    """A user as responses show it."""

    id: uuid.UUID
    email: str
    name: str | None
    created_at: datetime
    email_verified: bool = False


@dataclass(frozen=True)
class ClientInfo:
    """Who is calling: the client IP (proxy hops already resolved) and its user-agent."""

    ip_address: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.user_agent is not None:
            # PostgreSQL text cannot hold NUL; a header carrying one must not become a 500.
            agent = self.user_agent.replace("\x00", "")[:USER_AGENT_MAX]
            object.__setattr__(self, "user_agent", agent)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user: UserInfo
    session_id: uuid.UUID
    token_type: str = "bearer"  # noqa: S105 (RFC 6749 token type)


def parse_uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
