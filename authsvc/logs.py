"""Structured logs: one JSON object per line on stderr, each with the request's id.

Also gunicorn's logger class (`logger_class` in gunicorn.conf.py): its own messages and one
access line per request as JSON, in the same shape.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from gunicorn import glogging

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy or client may hand us as a request id: short, and harmless in a header or log.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        # Security events arrive pre-serialised; embed them as objects, not strings.
        if message.startswith("{"):
            try:
                entry.update(json.loads(message))
            except ValueError:
                entry["message"] = message
        else:
            entry["message"] = message
        if has_request_context() and "request_id" not in entry:
            request_id = g.get("request_id")
            if request_id:
                entry["request_id"] = request_id
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


def configure_logging(level: str) -> None:
    logger = logging.getLogger("authsvc")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_authsvc", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler._authsvc = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


class _RequestIds:
    """Ids for requests that bring none: 64 random bits per process, then a counter (32 hex
    digits). Unique without a system call per request; a request id is a label, not a
    secret. A forked child starts over with a prefix of its own."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)  # next() is atomic under the GIL

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_request_ids = _RequestIds()


def _assign_request_id() -> None:
    incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
    g.request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else _request_ids.new()


def _echo_request_id(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        # No view sets this header: append it rather than search the headers for it.
        response.headers.add(REQUEST_ID_HEADER, request_id)
    return response


def init_request_ids(app: Flask) -> None:
    """Every request gets an id (the caller's X-Request-ID if sane), echoed and logged."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)


class GunicornLogger(glogging.Logger):
    """gunicorn's logs as JSON lines. The access line leaves out the query string and the
    Referer: a reset link's token could be in either."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        headers = {name.lower(): value for name, value in resp.headers}
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        entry = {
            "event": "access",
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": (environ.get("PATH_INFO") or "")[:512],
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "request_id": headers.get(REQUEST_ID_HEADER.lower()),
            "user_agent": (environ.get("HTTP_USER_AGENT") or "")[:256] or None,
            "pid": os.getpid(),
        }
        self.access_log.info(json.dumps(entry, separators=(",", ":")))
