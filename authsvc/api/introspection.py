"""Token introspection (RFC 7662) for registered service clients."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from flask import request

from ..db import get_session
from ..errors import InvalidClient
from ..services import clients
from .auth import runtime
from .openapi import BODY, DATABASE, errors
from .parsing import Blueprint
from .schemas import IntrospectionArgsSchema, IntrospectionSchema

blp = Blueprint("introspection", __name__, url_prefix="/api/auth", description="Introspection")

BASIC_SECURITY = [{"clientBasicAuth": []}]


def client_credentials() -> tuple[str, str]:
    """client_id and secret from HTTP Basic (RFC 6749 §2.3.1: each form-urlencoded)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise InvalidClient("client authentication (HTTP Basic) is required")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    # A NUL is in no client id (and PostgreSQL text cannot hold one): wrong credentials.
    if "\x00" in client_id or "\x00" in secret:
        raise InvalidClient("malformed Basic credentials")
    return client_id, secret


def accepts_form_body(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view whose body is application/x-www-form-urlencoded (RFC 7662), not JSON."""
    view.accepts_form_body = True
    return view


@blp.post("/introspect")
@blp.doc(security=BASIC_SECURITY, operationId="introspectToken")
@blp.arguments(IntrospectionArgsSchema(), location="form")
@blp.response(200, IntrospectionSchema)
@errors(
    blp,
    BODY,
    {400: "bad_request: a malformed chunked body"},
    {415: "unsupported_media_type: the body is not application/x-www-form-urlencoded"},
    {401: "invalid_client: missing or wrong client credentials (HTTP Basic)"},
    DATABASE,
)
@accepts_form_body
def introspect(args: dict) -> dict:
    """Is this access token active? (RFC 7662, for registered service clients)"""
    db = get_session()
    client = clients.authenticate_client(db, *client_credentials())
    return clients.introspect(db, runtime(), client, args["token"])
