"""The error side of the OpenAPI document: every status an operation can answer, each as a
problem+json body with its `code`, so that generated clients can read errors as typed values.

    @errors(blp, BODY, BEARER, {409: "email_taken"})

Groups are merged left to right (a later description of a status replaces an earlier one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask_smorest import Blueprint

from .problems import PROBLEM_MIMETYPE, ProblemSchema

RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "the authentication challenge (RFC 6750 for Bearer, RFC 7617 for Basic)",
        "schema": {"type": "string"},
    }
}
HEADERS = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER}

# Every operation that reads a JSON body.
BODY = {
    400: "invalid_json: the body is not one JSON value (malformed, duplicate keys, NaN, "
    "nesting too deep, not UTF-8); bad_request: a malformed chunked body",
    413: "payload_too_large: the body is over MAX_CONTENT_LENGTH bytes",
    415: "unsupported_media_type: the body is not JSON (application/json, any +json type "
    "or text/plain)",
    422: "validation_error: a field is missing, unknown, of the wrong type or out of range "
    "(`errors` names each)",
}
# Operations that take no body still refuse one that is too big, not JSON or malformed.
REFUSED_BODY = {
    400: "bad_request: a malformed chunked body",
    413: BODY[413],
    415: BODY[415],
}
# Every operation that takes an access token.
BEARER = {
    401: "missing_token, invalid_token or token_expired: no valid access token of a live session"
}
# Operations that take the refresh token from the cookie too (REFRESH_TOKEN_TRANSPORT).
CSRF = {403: "csrf_failed: the cookie-authenticated request came from a page not allowed"}
LIMITED = {429: "rate_limited: too many requests; retry after Retry-After seconds"}
# Every operation that reaches the database.
DATABASE = {503: "service_unavailable: the database is unreachable; try again shortly"}


def errors(blp: Blueprint, *groups: Mapping[int, str]) -> Callable[[Any], Any]:
    """Document each status of `groups` as a problem+json response of the view."""
    merged: dict[int, str] = {}
    for group in groups:
        merged.update(group)

    def decorate(view: Any) -> Any:
        for status, description in sorted(merged.items(), reverse=True):
            view = blp.alt_response(
                status,
                schema=ProblemSchema,
                content_type=PROBLEM_MIMETYPE,
                description=description,
                headers=HEADERS.get(status),
            )(view)
        return view

    return decorate
