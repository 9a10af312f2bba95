"""Strict JSON request parsing for every blueprint.

Python's json module accepts what an auth service should not: duplicate keys (a proxy and
this service may read different values), NaN/Infinity, and nesting deep enough to raise
RecursionError. All of them are answered 400 invalid_json here instead.

The bodies of the hot endpoints (refresh, login, register …) are objects of a few text
fields. For such schemas a loader checks a body exactly as marshmallow would, in a fraction
of the time; whatever it does not accept as valid (a missing field, a wrong type, an unknown
key …) goes to webargs and marshmallow, which load it or word the 422 as always.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import g, request
from marshmallow import validate
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from .schemas import StrictSchema, Text


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # a key came twice: name it
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise json.JSONDecodeError(f"duplicate key {key[:50]!r}", "", 0)
            seen.add(key)
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


Loader = Callable[[Any], dict[str, Any] | None]


def _text_field_check(field: Text) -> Callable[[Any], bool] | None:
    """A test of one present value that passes only what `field` loads unchanged."""
    lengths = []
    for validator in field.validators:
        if type(validator) is not validate.Length or validator.equal is not None:
            return None
        lengths.append((validator.min or 0, validator.max))
    allow_none = field.allow_none

    def check(value: Any) -> bool:
        if value is None:
            return allow_none
        if type(value) is not str or "\x00" in value:
            return False
        try:
            value.encode("utf-8")  # lone surrogates ("\ud800" in JSON) are not text
        except UnicodeEncodeError:
            return False
        n = len(value)
        return all(low <= n and (high is None or n <= high) for low, high in lengths)

    return check


def simple_loader(schema: ma.Schema) -> Loader | None:
    """For a StrictSchema of Text fields checked by Length alone: a function that returns
    what `schema.load(body)` would for a body it accepts, and None for any other body (which
    marshmallow then loads or refuses). None if the schema is not that simple."""
    if (
        not isinstance(schema, StrictSchema)
        or schema.many
        or schema.partial
        or schema.only
        or schema.exclude
        or schema.unknown != ma.RAISE
        or any(getattr(schema, "_hooks", {"unknown": [True]}).values())  # pre/post_load …
    ):
        return None
    fields = []
    for name, field in schema.load_fields.items():
        if type(field) is not Text or field.data_key not in (None, name):
            return None
        if field.attribute not in (None, name) or callable(field.load_default):
            return None
        check = _text_field_check(field)
        if check is None:
            return None
        fields.append((name, field.required, field.load_default, check))
    known = frozenset(name for name, *_ in fields)

    def load(body: Any) -> dict[str, Any] | None:
        if type(body) is not dict or not known.issuperset(body):
            return None
        loaded = {}
        for name, required, default, check in fields:
            if name in body:
                value = body[name]
                if not check(value):
                    return None
                loaded[name] = value
            elif required:
                return None
            elif default is not ma.missing:
                loaded[name] = default
        return loaded

    return load


class StrictJSONParser(FlaskParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaders: weakref.WeakKeyDictionary[ma.Schema, Loader | None] = (
            weakref.WeakKeyDictionary()
        )

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        return request_json()

    def _loader(self, schema: Any) -> Loader | None:
        if not isinstance(schema, ma.Schema):
            return None
        try:
            return self._loaders[schema]
        except KeyError:
            loader = self._loaders[schema] = simple_loader(schema)
            return loader

    def parse(  # type: ignore[override]
        self,
        argmap: Any,
        req: Any = None,
        *,
        location: str | None = None,
        unknown: str | None = core._UNKNOWN_DEFAULT_PARAM,
        validate: Any = None,
        **kwargs: Any,
    ) -> Any:
        if (
            (location or self.location) == "json"
            and unknown == core._UNKNOWN_DEFAULT_PARAM
            and validate is None
            and (req is None or req is request._get_current_object())  # type: ignore[attr-defined]
            and (loader := self._loader(argmap)) is not None
            and is_json_request(request)
        ):
            try:
                loaded = loader(request_json())
            except json.JSONDecodeError:
                loaded = None  # webargs answers it 400
            if loaded is not None:
                return loaded
        return super().parse(
            argmap, req, location=location, unknown=unknown, validate=validate, **kwargs
        )


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint whose JSON bodies go through the strict parser."""

    ARGUMENTS_PARSER = StrictJSONParser()
