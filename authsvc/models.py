"""Tables: users, sessions (one per login on one device), refresh_tokens, reset tokens, events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base

# Integer primary keys that autoincrement on SQLite too (BIGINT is not a rowid alias there).
BigId = BigInteger().with_variant(Integer, "sqlite")

USER_AGENT_MAX = 512
IP_MAX = 45  # an IPv6 address in its longest text form


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    name: Mapped[str | None] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]
    # When a mail sent to `email` came back (a verification link, a reset, a confirmed
    # change); None: the address is unverified.
    email_verified_at: Mapped[datetime | None]
    # None: the account may sign in; set by an operator (every session ends with it).
    disabled_at: Mapped[datetime | None]


class AuthSession(Base):
    """One login on one device: the chain of refresh tokens that rotation produces from it."""

    __tablename__ = "sessions"
    # No index on expires_at, which every rotation moves: PostgreSQL then updates the row
    # in place (HOT), without new entries in every index (migration 0003).
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        Index(None, "revoked_at"),
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    # When the session ends unless refreshed: its live refresh token's expiry.
    expires_at: Mapped[datetime]
    # SESSION_MAX_LIFETIME after login; no rotation extends a session past it.
    absolute_expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))
    ip_address: Mapped[str | None] = mapped_column(String(IP_MAX))


class RefreshToken(Base):
    """One link of a session's chain. Only the SHA-256 of the token is stored."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index(None, "user_id"),
        Index(None, "expires_at"),
        Index(None, "user_id", "revoked"),
        Index(None, "session_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    # Set once, by the one request that rotated this token away.
    spent_at: Mapped[datetime | None]
    # The successor token encrypted under a key only the holder of this token can derive,
    # so that a retry within the grace window gets the same successor back.
    successor_sealed: Mapped[bytes | None] = mapped_column(LargeBinary(128))
    revoked: Mapped[bool] = mapped_column(default=False, server_default=false())
    revoked_at: Mapped[datetime | None]
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))
    ip_address: Mapped[str | None] = mapped_column(String(IP_MAX))


class PasswordResetToken(Base):
    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # Set when the token was used or voided by a newer request; either way it is dead.
    used_at: Mapped[datetime | None]


class EmailToken(Base):
    """A single-use token mailed to `email`: verify that address (`purpose` "verify") or move
    the account to it ("change"). Only its SHA-256 is stored."""

    __tablename__ = "email_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(String(320))  # the address the token was mailed to
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # Set when the token was used or voided by a newer one; either way it is dead.
    used_at: Mapped[datetime | None]


class SecurityEvent(Base):
    __tablename__ = "security_events"
    __table_args__ = (Index(None, "user_id", "created_at"), Index(None, "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    ip_address: Mapped[str | None] = mapped_column(String(IP_MAX))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))
    session_id: Mapped[uuid.UUID | None]
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SigningKeyRecord(Base):
    """A JWT signing key shared by every worker and instance. The private part is stored
    encrypted under JWT_KEY_ENCRYPTION_KEY; state follows from the timestamps."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    # Published from creation; signs from activates_at until a newer key activates.
    activates_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    development: Mapped[bool] = mapped_column(default=False, server_default=false())


class ServiceClient(Base):
    """A back-end service allowed to introspect tokens (with the admin scope, also to manage
    accounts). Secrets are 256 random bits, so a SHA-256 of them is as good as a slow hash
    and keeps introspection fast."""

    __tablename__ = "service_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # Space-separated (RFC 6749 §3.3): "introspect", "admin". Clients made before scopes
    # existed can introspect only.
    scopes: Mapped[str] = mapped_column(
        String(200), default="introspect", server_default="introspect"
    )
