"""HTTP layer: the problem+json Api, its blueprints, and request/response policies."""

from __future__ import annotations

import io
import json
from typing import Any

from flask import Flask, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from . import account, cors, introspection, limits, passwords, sessions, tokens, wellknown
from .admin import blp as admin_blp
from .problems import ProblemApi
from .schemas import NEW_PASSWORD_FIELDS
from .verification import blp as email_blp

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

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


class CompactJSON(DefaultJSONProvider):
    """Flask's JSON responses, with keys in the order the view put them and one encoder made
    up front: json.dumps builds a new encoder on every call that passes it options."""

    sort_keys = False

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self._encoder = json.JSONEncoder(
            default=self.default, ensure_ascii=self.ensure_ascii, separators=(",", ":")
        )

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self._app.debug or self.compact is False:
            return super().response(*args, **kwargs)  # indented, for people reading it
        body = self._encoder.encode(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(f"{body}\n", mimetype=self.mimetype)


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _buffer_unsized_body(limit: int) -> None:
    """A chunked body has no length to check up front. Read it now, one byte past the limit
    at most: too long is 413 like any oversized body (Werkzeug would cut it short instead)."""
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return  # the server does not de-chunk; Werkzeug then sees no body at all
    data = bytearray()
    while len(data) <= limit:
        chunk = environ["wsgi.input"].read(min(64 * 1024, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise RequestEntityTooLarge(f"the request body must be at most {limit} bytes")
    environ["wsgi.input"] = io.BytesIO(bytes(data))
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def _check_request_body() -> None:
    """Refuse oversized and non-JSON bodies before anything reads them."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    if req.method not in BODY_METHODS:
        return
    length = req.content_length
    limit = req.max_content_length
    if length is not None and limit is not None and length > limit:
        raise RequestEntityTooLarge(f"the request body must be at most {limit} bytes")
    chunked = "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and length is None and limit is not None:
        _buffer_unsized_body(limit)
    if not ((length or 0) > 0 or chunked) or _is_json(req.mimetype):
        return
    view = current_app.view_functions.get(req.endpoint or "")
    form_ok = getattr(view, "accepts_form_body", False)
    if not (form_ok and req.mimetype == "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")


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


def document_password_policy(api: ProblemApi, min_length: int) -> None:
    """The new passwords' minLength in the OpenAPI document is this app's policy minimum
    (PASSWORD_MIN_LENGTH), which the schemas, shared by every app, cannot know."""
    documented = api.spec.components.schemas
    for component, field in NEW_PASSWORD_FIELDS.items():
        documented[component]["properties"][field]["minLength"] = min_length


def init_api(app: Flask) -> ProblemApi:
    app.config.update(
        API_TITLE="authsvc",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/",
    )
    app.json = CompactJSON(app)
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
    document_password_policy(api, app.extensions["authsvc"].settings.PASSWORD_MIN_LENGTH)
    cors.init_app(app)
    app.before_request(_check_request_body)
    app.after_request(_response_headers)
    limits.init_app(app)
    return api
