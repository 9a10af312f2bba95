"""Request bodies at the edge: size and media type checked before anything reads them, and
the connection kept usable after a refused body.

A keep-alive connection can carry the next request only once this one's body is off the
socket. gunicorn skips what the app left unread, but only a few tens of KiB of it; past
that it closes the connection after its response said `keep-alive`, and a reverse proxy
reusing the connection sees it dropped. So a body refused unread (413, 415) is drained
here, up to DRAIN_LIMIT bytes, and the connection stays open for the next request. Only
what cannot be drained — a larger body, a chunked coding cut short or malformed — is
answered `Connection: close`, and the server told to close.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from ..errors import BadRequestBody
from .parsing import is_json_body

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What any server is expected to skip of an unread body to keep the connection (gunicorn
# skips up to 64 KiB); a larger unread body closes it.
SKIPPABLE_BODY = 32 * 1024
# A refused body up to this size is read and discarded so that the connection stays usable.
DRAIN_LIMIT = 1024 * 1024
_CLOSE = "authsvc.close_connection"
_DRAINED = "authsvc.body_drained"
_BUFFERED = "authsvc.body_buffered"


def _buffer_unsized_body(limit: int) -> None:
    """A chunked body has no length to check up front. Read it now, one byte past the limit
    at most: too long is 413 like any oversized body (Werkzeug would cut it short instead).
    A chunked coding the server cannot read (a bad chunk size, a missing CRLF, a body cut
    short) is 400."""
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return  # the server does not de-chunk; Werkzeug then sees no body at all
    data = bytearray()
    try:
        while len(data) <= limit:
            chunk = environ["wsgi.input"].read(min(64 * 1024, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    except Exception:  # each server has its own errors for a broken chunked coding
        raise BadRequestBody("the chunked request body is malformed or incomplete") from None
    if len(data) > limit:
        raise RequestEntityTooLarge(f"the request body must be at most {limit} bytes")
    environ["wsgi.input"] = io.BytesIO(bytes(data))
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ[_BUFFERED] = True


def _drain(length: int | None) -> None:
    """Read and discard a refused body of a declared `length` (at most DRAIN_LIMIT bytes)."""
    environ = request.environ
    if not length or length > DRAIN_LIMIT:
        return
    stream, left = environ["wsgi.input"], length
    try:
        while left > 0:
            chunk = stream.read(min(64 * 1024, left))
            if not chunk:
                return  # the client sent less than it declared; the server closes
            left -= len(chunk)
    except OSError:  # a client that stalls (the read timeout) or goes away
        return
    environ[_DRAINED] = True


def check_request_body() -> None:
    """Refuse oversized and non-JSON bodies before anything reads them (draining them)."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    if req.method not in BODY_METHODS:
        return
    length = req.content_length
    limit = req.max_content_length
    if length is not None and limit is not None and length > limit:
        _drain(length)
        raise RequestEntityTooLarge(f"the request body must be at most {limit} bytes")
    chunked = "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and length is None and limit is not None:
        _buffer_unsized_body(limit)
    if not ((length or 0) > 0 or chunked) or is_json_body(req.mimetype):
        return
    view = current_app.view_functions.get(req.endpoint or "")
    form_ok = getattr(view, "accepts_form_body", False)
    if not (form_ok and req.mimetype == "application/x-www-form-urlencoded"):
        _drain(length)
        raise UnsupportedMediaType(
            "the request body must be JSON (application/json, a +json type or text/plain)"
        )


def _connection_policy(response: Response) -> Response:
    environ = request.environ
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if environ.get(_BUFFERED) or environ.get(_DRAINED):
        return response  # read to its end
    if chunked or (request.content_length or 0) > SKIPPABLE_BODY:
        environ[_CLOSE] = True
        response.headers["Connection"] = "close"
    return response


class CloseAfterUnreadBody:
    """WSGI middleware: tells the server to close the connection when the app asked for it
    (a body it could not drain).

    A WSGI app cannot set hop-by-hop headers, and gunicorn drops them. gunicorn's
    `start_response` is a bound method of its response object, whose public `force_close()`
    makes it say `Connection: close` and close; that binding is gunicorn's own detail, so it
    is looked up defensively and used only in this rare case. Other servers get the header
    itself."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if environ.get(_CLOSE):
                force_close = getattr(
                    getattr(start_response, "__self__", None), "force_close", None
                )
                if callable(force_close):
                    force_close()
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def init_app(app: Flask) -> None:
    app.before_request(check_request_body)
    app.after_request(_connection_policy)
    app.wsgi_app = CloseAfterUnreadBody(app.wsgi_app)  # type: ignore[method-assign]
