"""The one place errors become responses: RFC 9457 problem details, documented in OpenAPI."""

from __future__ import annotations

import http
import json
import logging
from typing import Any

import marshmallow as ma
from flask import Response
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from ..errors import AuthError, ServiceUnavailable

PROBLEM_MIMETYPE = "application/problem+json"
log = logging.getLogger("authsvc.errors")

# Stable codes for errors raised by Flask/Werkzeug/webargs rather than by authsvc itself.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, with a stable machine-readable `code`; more members may
    come (RFC 9457 §3.2), so clients must accept them."""

    class Meta:
        unknown = ma.INCLUDE  # documented as additionalProperties: true

    type = ma.fields.String(
        required=True, metadata={"description": "URI identifying the problem type"}
    )
    title = ma.fields.String(
        required=True, metadata={"description": "Short summary of the problem type"}
    )
    status = ma.fields.Integer(required=True, metadata={"description": "HTTP status code"})
    detail = ma.fields.String(
        required=True, metadata={"description": "Explanation of this occurrence"}
    )
    code = ma.fields.String(
        required=True, metadata={"description": "Stable machine-readable error code"}
    )
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        metadata={"description": "Field -> messages, on validation failures"},
    )


def problem(
    status: int,
    code: str,
    title: str | None = None,
    detail: str | None = None,
    errors: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    title = title or http.HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:authsvc:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def render_auth_error(error: AuthError) -> Response:
    return problem(error.status, error.code, error.title, error.detail, error.errors, error.headers)


def _webargs_errors(data: dict[str, Any]) -> Any:
    """webargs nests messages by location ({"json": {...}}); clients want field -> messages."""
    messages = data.get("errors") or data.get("messages")
    if isinstance(messages, dict) and set(messages) <= {"json", "query", "headers", "view_args"}:
        merged: dict[str, Any] = {}
        for part in messages.values():
            if isinstance(part, dict):
                merged.update(part)
            else:
                merged.setdefault("_schema", []).extend(part if isinstance(part, list) else [part])
        return merged
    return messages


class ProblemApi(Api):
    """flask-smorest Api whose every error, ours or the framework's, is problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        # As flask-smorest does, but documented with the problem+json media type.
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)

    def _register_error_handlers(self) -> None:
        app = self._app
        app.register_error_handler(HTTPException, self.handle_http_exception)
        app.register_error_handler(AuthError, render_auth_error)
        app.register_error_handler(OperationalError, _database_unavailable)
        app.register_error_handler(PoolTimeout, _database_unavailable)
        app.register_error_handler(DBAPIError, _database_error)
        app.register_error_handler(Exception, _unexpected)

    def handle_http_exception(self, error: HTTPException) -> Response:
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        code = _HTTP_CODES.get(status, "http_error")
        detail = data.get("message") or error.description
        errors = _webargs_errors(data) if data else None
        if status == 400 and errors and "json" in (data.get("messages") or {}):
            code, detail = "invalid_json", "The request body is not valid JSON."
        elif status == 422:
            detail = "The request body does not match the expected schema."
        if status >= 500:
            detail = http.HTTPStatus(status).phrase
        headers = dict(data.get("headers") or {})
        if status == 405 and error.get_response().headers.get("Allow"):
            headers["Allow"] = error.get_response().headers["Allow"]
        return problem(status, code, None, detail, errors if status != 400 else None, headers)


def _database_unavailable(error: Exception) -> Response:
    log.warning("database unavailable: %s", type(error).__name__)
    return render_auth_error(ServiceUnavailable("the database is unreachable; try again shortly"))


def _database_error(error: DBAPIError) -> Response:
    if error.connection_invalidated:
        return _database_unavailable(error)
    return _unexpected(error)


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return problem(500, "internal_error", detail="An unexpected error occurred.")
