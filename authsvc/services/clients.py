"""Service clients and token introspection (RFC 7662) for back ends that need revocation
to take effect at once rather than when an access token expires."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..db import transaction
from ..errors import AuthError, InvalidClient, NotFound
from ..models import ServiceClient
from ..runtime import Runtime
from ..security.tokens import hash_token, new_token
from .tokens import authenticate_access_token

INACTIVE: dict[str, Any] = {"active": False}
# introspect: POST /api/auth/introspect; admin: everything under /api/admin.
SCOPES = ("introspect", "admin")


def has_scope(client: ServiceClient, scope: str) -> bool:
    return scope in client.scopes.split()


def create_client(
    db: Session, rt: Runtime, name: str, scopes: Sequence[str] = ("introspect",)
) -> tuple[ServiceClient, str]:
    """Register a client; returns it with its secret, which is shown once and stored hashed."""
    name = " ".join(name.split())
    if not name or len(name) > 100:
        raise AuthError("the client name must be 1 to 100 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise AuthError(f"scopes must be some of {', '.join(SCOPES)}")
    secret = new_token()
    client = ServiceClient(
        id="svc_" + secrets.token_hex(12),
        name=name,
        secret_hash=hash_token(secret),
        created_at=rt.clock(),
        scopes=" ".join(scope for scope in SCOPES if scope in scopes),
    )
    with transaction(db):
        db.add(client)
    return client, secret


def revoke_client(db: Session, rt: Runtime, client_id: str) -> None:
    with transaction(db):
        result = db.execute(
            update(ServiceClient)
            .where(ServiceClient.id == client_id, ServiceClient.revoked_at.is_(None))
            .values(revoked_at=rt.clock())
        )
        if result.rowcount != 1:
            raise NotFound(f"no active client {client_id}")


def list_clients(db: Session) -> list[ServiceClient]:
    return list(db.scalars(select(ServiceClient).order_by(ServiceClient.created_at)))


def authenticate_client(db: Session, client_id: str, secret: str) -> ServiceClient:
    """The active client with these credentials, or InvalidClient (same answer for all)."""
    if not client_id or not secret or len(client_id) > 64 or len(secret) > 128:
        raise InvalidClient("invalid client credentials")
    client = db.get(ServiceClient, client_id)
    expected = client.secret_hash if client is not None else hash_token("unknown client")
    # Constant-time comparison whether or not the client exists.
    if not hmac.compare_digest(expected, hash_token(secret)) or client is None:
        raise InvalidClient("invalid client credentials")
    if client.revoked_at is not None:
        raise InvalidClient("invalid client credentials")
    return client


def introspect(db: Session, rt: Runtime, client: ServiceClient, token: str) -> dict[str, Any]:
    """RFC 7662: the claims of a valid access token of a live session, else active=false."""
    try:
        principal = authenticate_access_token(db, rt, token)
    except AuthError:
        return INACTIVE
    claims = principal.claims.raw
    return {
        "active": True,
        "token_type": "access_token",
        "client_id": client.id,
        **{k: claims[k] for k in ("iss", "aud", "sub", "sid", "iat", "exp", "jti")},
    }
