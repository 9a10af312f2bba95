"""Strict JSON request bodies for every blueprint.

Python's json module accepts what an auth service should not: duplicate keys (a proxy and
this service may read different values), NaN/Infinity, nesting deep enough to raise
RecursionError, integers past the int-conversion limit (ValueError). Each of them, and a
body that is not UTF-8, is answered 400 invalid_json here; marshmallow then loads every
body that is JSON.

A body is JSON when its type is application/json, any application/*+json, or text/plain:
`fetch(url, {method: "POST", body: JSON.stringify(...)})` with no headers sends the latter.
"""

from __future__ import annotations

import json
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import g, request
from webargs import core
from webargs.flaskparser import FlaskParser

from ..errors import InvalidJSON

JSON_BODY_TYPES = frozenset({"application/json", "text/plain"})


def is_json_body(mimetype: str) -> bool:
    """Whether a body of this (lower-case, parameter-free) media type is read as JSON."""
    return mimetype in JSON_BODY_TYPES or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # a key came twice: name it
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJSON(f"duplicate key {key[:50]!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not valid JSON")


def strict_json_loads(data: bytes) -> Any:
    """The JSON value of `data`, or InvalidJSON saying why it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("the body is not UTF-8") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise InvalidJSON("the body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not JSON ({exc.msg})") from None
    except ValueError:  # an integer past sys.get_int_max_str_digits()
        raise InvalidJSON("the body holds a number too long to read") from None


_UNPARSED = object()


def request_json() -> Any:
    """The request's JSON body, parsed strictly and only once per request (the rate limits
    key on it before the view's arguments are loaded); InvalidJSON if it is not JSON."""
    parsed = g.get("_authsvc_json", _UNPARSED)
    if parsed is _UNPARSED:
        try:
            parsed = strict_json_loads(request.get_data(cache=True))
        except InvalidJSON as exc:
            parsed = exc
        g._authsvc_json = parsed
    if isinstance(parsed, InvalidJSON):
        raise parsed
    return parsed


class StrictJSONParser(FlaskParser):
    """webargs' Flask parser whose `json` location is the strict loader above (a location
    loader, webargs' documented way to change how a location is read)."""

    __location_map__ = {**FlaskParser.__location_map__, "json": "load_strict_json"}

    def load_strict_json(self, req: Any, schema: ma.Schema) -> Any:
        if not is_json_body(req.mimetype) or not req.get_data(cache=True):
            return core.missing  # no body: marshmallow names the missing fields (422)
        return request_json()


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint whose JSON bodies go through the strict parser."""

    ARGUMENTS_PARSER = StrictJSONParser()
