"""CORS for the origins in CORS_ORIGINS: exact matches only, never `*`.

A listed origin gets its own origin echoed back with credentials allowed (a browser app may
send cookies or an Authorization header); any other origin gets no CORS headers at all, so
the browser keeps the response from it. Preflights for a listed origin are answered here,
before body checks and rate limits.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request

ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "X-Requested-With")
EXPOSED_HEADERS = ("Retry-After", "WWW-Authenticate", "X-Request-ID")
PREFLIGHT_MAX_AGE = 600  # seconds a browser may cache a preflight answer


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin.lower() in current_app.extensions["authsvc_cors"]:
        return origin
    return None


def _answer_preflight() -> Response | None:
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = _allowed_origin()
    rule = request.url_rule
    if origin is None or rule is None:
        return None  # not ours to allow: the normal OPTIONS answer, without CORS headers
    methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
    response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
    response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response


def _add_headers(response: Response) -> Response:
    # The answer depends on Origin whether or not it is allowed: caches must keep them apart.
    response.vary.add("Origin")
    origin = _allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
    return response


def init_app(app: Flask) -> None:
    """No CORS_ORIGINS, no CORS: same-origin only, and no Vary noise."""
    origins = app.config["AUTHSVC_SETTINGS"].CORS_ORIGINS
    app.extensions["authsvc_cors"] = frozenset(origin.lower() for origin in origins)
    if origins:
        app.before_request(_answer_preflight)
        app.after_request(_add_headers)
