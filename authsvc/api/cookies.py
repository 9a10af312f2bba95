"""The refresh token as an HttpOnly cookie, and the CSRF rule for requests it authenticates.

REFRESH_TOKEN_TRANSPORT says where a refresh token travels: `body` (the JSON field only, as
the seed did), `cookie` (only an HttpOnly cookie: no script on the page can read it) or
`both` (the default: existing body clients work unchanged, browsers also get the cookie).

The cookie is set once per endpoint that reads it (`REFRESH_COOKIE_PATH` + `/refresh` and
`/logout`), so the browser sends it nowhere else. A request the cookie authenticates is one
a browser may send on its own, so it must prove it comes from an allowed page: an allowed
Origin (else Referer) and a header that a cross-site form cannot send (a JSON Content-Type or
X-Requested-With; both force a CORS preflight). text/plain, form and multipart bodies are
never enough, whatever else they carry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Response, after_this_request, request

from ..config import Settings
from ..errors import CsrfFailed, ValidationFailed
from ..services.common import TokenPair
from .auth import runtime

COOKIE_ENDPOINTS = ("refresh", "logout")
FORM_MIMETYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_COOKIE_TOKEN = 512  # as RefreshTokenArgsSchema: longer is no token of ours
BODY_FIELDS = ("access_token", "token_type", "expires_in", "refresh_expires_in", "user")


def _settings() -> Settings:
    return runtime().settings


def cookie_transport() -> bool:
    """Whether refresh tokens travel in the cookie (`cookie` or `both`)."""
    return _settings().REFRESH_TOKEN_TRANSPORT != "body"  # noqa: S105 (a mode)


def cookie_token() -> str | None:
    """The refresh cookie's value, when this transport uses one and the request carries it."""
    if not cookie_transport():
        return None
    value = request.cookies.get(_settings().REFRESH_COOKIE_NAME)
    return value if value and len(value) <= MAX_COOKIE_TOKEN else None


def _secure(s: Settings) -> bool:
    # Browsers keep a Secure cookie only from https (and from http://localhost in some of
    # them): plain http is allowed for loopback hosts in development, nowhere else.
    if s.is_production or s.REFRESH_COOKIE_SAMESITE == "None" or request.scheme == "https":
        return True
    return urlsplit(f"//{request.host}").hostname not in LOOPBACK_HOSTS


def _write_cookie(response: Response, value: str, max_age: int) -> Response:
    s = _settings()
    for endpoint in COOKIE_ENDPOINTS:
        response.set_cookie(
            s.REFRESH_COOKIE_NAME,
            value,
            max_age=max(0, max_age),
            expires=None if max_age > 0 else 0,
            path=f"{s.REFRESH_COOKIE_PATH}/{endpoint}",
            secure=_secure(s),
            httponly=True,
            samesite=s.REFRESH_COOKIE_SAMESITE,
        )
    return response


def issue(pair: TokenPair) -> Any:
    """The response body for a view that hands out `pair`; sets the cookie in cookie modes.
    In `cookie` mode the body has no refresh_token: it never reaches a script."""
    transport = _settings().REFRESH_TOKEN_TRANSPORT
    if transport == "body":
        return pair
    token, max_age = pair.refresh_token, pair.refresh_expires_in
    after_this_request(lambda response: _write_cookie(response, token, max_age))
    if transport == "cookie":
        return {name: getattr(pair, name) for name in BODY_FIELDS}
    return pair


def clear() -> None:
    """Expire the refresh cookie with this response (the session it held has ended)."""
    if cookie_transport():
        after_this_request(lambda response: _write_cookie(response, "", 0))


def clear_if_held(token: str | None) -> None:
    """Expire the cookie unless it holds another token than `token` (another session)."""
    held = cookie_token()
    if held is None or token is None or held == token:
        clear()


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _allowed_origin(origin: str) -> bool:
    s = _settings()
    if origin in {o.lower() for o in s.CORS_ORIGINS} or origin == _origin_of(s.FRONTEND_URL):
        return True
    # The service's own pages (same origin as the API) are allowed too.
    return urlsplit(origin).netloc == request.host.lower()


def check_csrf() -> None:
    """Refuse a cookie-authenticated request that a page not allowed could have made."""
    origin = request.headers.get("Origin") or _origin_of(request.headers.get("Referer", ""))
    if not origin or not _allowed_origin(origin.lower()):
        raise CsrfFailed("the refresh cookie is accepted only from the allowed front ends")
    mimetype = request.mimetype
    is_json = mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )
    if mimetype in FORM_MIMETYPES or not (is_json or "X-Requested-With" in request.headers):
        raise CsrfFailed(
            "a request authenticated by the refresh cookie needs Content-Type: "
            "application/json or an X-Requested-With header"
        )


def presented_refresh_token(args: dict, *, optional: bool = False) -> str | None:
    """The request's refresh token: the body's when present, else the cookie's (CSRF-checked
    first). None only when `optional` and the transport uses cookies (logout is idempotent)."""
    token = args.get("refresh_token")
    if token is not None:
        return token
    token = cookie_token()
    if token is not None:
        check_csrf()
        return token
    if optional and cookie_transport():
        return None
    where = "" if not cookie_transport() else " (in the body, or as the refresh cookie)"
    raise ValidationFailed.field("refresh_token", f"Missing data for required field{where}.")
