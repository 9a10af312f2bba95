"""HTTP layer: the problem+json Api, its blueprints, and request/response policies."""

from __future__ import annotations

from flask import Flask, Response, request

from . import (
    account,
    bodies,
    cors,
    docs,
    introspection,
    limits,
    passwords,
    sessions,
    tokens,
    wellknown,
)
from .admin import blp as admin_blp
from .problems import ProblemApi
from .schemas import NEW_PASSWORD_FIELDS, PASSWORD_FIELDS
from .verification import blp as email_blp

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
NO_STORE_HEADERS = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
CSP_HEADER = ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
JSON_MIMETYPES = ("application/json", "application/problem+json")


_SECURITY_HEADERS = [(name.lower(), (name, value)) for name, value in SECURITY_HEADERS.items()]


def _response_headers(response: Response) -> Response:
    headers = response.headers
    # One pass over the headers a view set; then appends. (`name in headers` scans and
    # lower-cases every header per lookup, on every response.)
    present = {name.lower() for name, _ in headers}
    missing = [header for name, header in _SECURITY_HEADERS if name not in present]
    if request.path.startswith(("/api/auth/", "/api/admin/")):
        # Token pairs and personal data: never stored by a browser or a shared cache.
        if "cache-control" in present:
            headers.remove("Cache-Control")
        if "pragma" in present:
            headers.remove("Pragma")
        missing += NO_STORE_HEADERS
    if "content-security-policy" not in present and response.mimetype in JSON_MIMETYPES:
        missing.append(CSP_HEADER)
    headers.extend(missing)
    return response


def document_password_policy(api: ProblemApi, min_length: int, max_length: int) -> None:
    """The passwords' limits in the OpenAPI document are this app's policy (PASSWORD_MIN_LENGTH,
    PASSWORD_MAX_LENGTH), which the schemas, shared by every app, cannot know."""
    documented = api.spec.components.schemas
    for component, field in NEW_PASSWORD_FIELDS.items():
        documented[component]["properties"][field]["minLength"] = min_length
    for component, field in PASSWORD_FIELDS:
        documented[component]["properties"][field]["maxLength"] = max_length


def init_api(app: Flask) -> ProblemApi:
    settings = app.extensions["authsvc"].settings
    # Werkzeug answers `//x` with a redirect to `/x` whose Location is built from the Host
    # header: a request path must never send a client to a host the request named.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config.update(
        API_TITLE="authsvc",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"servers": [{"url": settings.PUBLIC_URL or "/"}]},
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keys in the schemas' order
    api = ProblemApi(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    api.spec.components.security_scheme("clientBasicAuth", {"type": "http", "scheme": "basic"})
    for blueprint in (
        account.blp,
        tokens.blp,
        passwords.blp,
        sessions.blp,
        introspection.blp,
        wellknown.blp,
        email_blp,
        admin_blp,
    ):
        api.register_blueprint(blueprint)
    document_password_policy(api, settings.PASSWORD_MIN_LENGTH, settings.PASSWORD_MAX_LENGTH)
    if settings.API_DOCS_ENABLED:
        docs.init_app(app)
    cors.init_app(app)
    bodies.init_app(app)
    app.after_request(_response_headers)
    limits.init_app(app)
    return api
