"""Strict JSON request parsing for every blueprint.

Python's json module accepts what an auth service should not: duplicate keys (a proxy and
this service may read different values), NaN/Infinity, and nesting deep enough to raise
RecursionError. All of them are answered 400 invalid_json here instead.
"""

from __future__ import annotations

import json
from typing import Any

import flask_smorest
from flask import g, request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise json.JSONDecodeError(f"duplicate key {key[:50]!r}", "", 0)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", "", 0)


def strict_json_loads(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("body is not UTF-8", "", exc.start) from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise json.JSONDecodeError("nesting too deep", "", 0) from None


_UNPARSED = object()


def request_json() -> Any:
    """The request's JSON body, parsed strictly and only once per request (the rate limits
    key on it before the view's arguments are loaded); JSONDecodeError if it is not JSON."""
    parsed = g.get("_authsvc_json", _UNPARSED)
    if parsed is _UNPARSED:
        try:
            parsed = strict_json_loads(request.get_data(cache=True))
        except json.JSONDecodeError as exc:
            parsed = exc
        g._authsvc_json = parsed
    if isinstance(parsed, json.JSONDecodeError):
        raise parsed
    return parsed


class StrictJSONParser(FlaskParser):
    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        return request_json()


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint whose JSON bodies go through the strict parser."""

    ARGUMENTS_PARSER = StrictJSONParser()
