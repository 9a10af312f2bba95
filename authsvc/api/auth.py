"""Request context for views: the bearer guard, the caller's client info, the runtime."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from ..db import get_session
from ..errors import InvalidToken, MissingToken
from ..runtime import Runtime
from ..services.common import ClientInfo
from ..services.tokens import Principal, authenticate_access_token

BEARER_SECURITY = [{"bearerAuth": []}]


def runtime() -> Runtime:
    return current_app.extensions["authsvc"]


def _valid_ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A zone ("fe80::1%eth0") means nothing beyond the proxy's host and has no length limit.
    return None if getattr(address, "scope_id", None) else str(address)


def client_ip() -> str | None:
    """The peer address, or the address `TRUSTED_PROXY_HOPS` trusted proxies saw.

    X-Forwarded-For is appended to by each proxy; only the last N entries were written by
    proxies we trust, everything left of them is whatever the client chose to send.
    """
    hops = runtime().settings.TRUSTED_PROXY_HOPS
    peer = request.remote_addr
    if hops:
        forwarded = [p for h in request.headers.getlist("X-Forwarded-For") for p in h.split(",")]
        if len(forwarded) >= hops:
            return _valid_ip(forwarded[-hops]) or peer
    return peer


@functools.lru_cache(maxsize=4096)
def network_of(address: str | None, ipv6_prefix: int) -> str:
    """The network an address stands for in rate limits: an IPv4 address as itself (also
    when written IPv4-mapped, ::ffff:a.b.c.d), an IPv6 address as its /`ipv6_prefix` — one
    subscriber is usually given a whole /64, and can pick any address in it."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (e.g. a unix-socket peer): itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)


def client_network() -> str:
    """The caller's network (see network_of): what per-client rate limits are keyed on.
    Sessions and events keep the full address (client_ip)."""
    return network_of(client_ip(), runtime().settings.RATELIMIT_IPV6_PREFIX)


def client_info() -> ClientInfo:
    return ClientInfo(ip_address=client_ip(), user_agent=request.headers.get("User-Agent"))


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise MissingToken("an access token is required (Authorization: Bearer …)")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
    return token.strip()


def bearer_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the request unless it carries a valid access token of a live session."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.principal = authenticate_access_token(get_session(), runtime(), bearer_token())
        return view(*args, **kwargs)

    return wrapper


def current_principal() -> Principal:
    return g.principal
