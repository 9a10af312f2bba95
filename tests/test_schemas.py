"""The fast paths around the schemas do exactly what marshmallow does with them.

- Request bodies: `parsing.simple_loader` either returns what `schema.load` returns, or
  declines (None) and leaves the body to webargs and marshmallow.
- Responses: the direct dumps of UserSchema and TokenPairSchema equal marshmallow's dump.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.api import schemas
from authsvc.api.parsing import simple_loader
from authsvc.services.common import TokenPair, UserInfo
from conftest import PASSWORD, bearer

BODY_SCHEMAS = [
    schemas.RegisterArgsSchema(),
    schemas.LoginArgsSchema(),
    schemas.RefreshTokenArgsSchema(),
    schemas.ForgotPasswordArgsSchema(),
    schemas.ResetPasswordArgsSchema(),
    schemas.ChangePasswordArgsSchema(),
    schemas.IntrospectionArgsSchema(),
]


def _names(schema: ma.Schema) -> list[str]:
    return list(schema.load_fields)


def _values() -> st.SearchStrategy:
    return st.one_of(
        st.text(max_size=20),
        st.text(min_size=300, max_size=1100),  # around every Length maximum
        st.sampled_from(["", "a", "\x00", "ok\x00", "\ud800", "x\udfff", "é" * 3, "a" * 512]),
        st.none(),
        st.integers(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.lists(st.text(max_size=3), max_size=2),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    )


def _bodies(schema: ma.Schema) -> st.SearchStrategy:
    keys = st.one_of(st.sampled_from(_names(schema)), st.text(max_size=8))
    objects = st.dictionaries(keys, _values(), max_size=len(_names(schema)) + 1)
    complete = st.fixed_dictionaries({name: _values() for name in _names(schema)})
    return st.one_of(objects, complete, _values())


def _marshmallow(schema: ma.Schema, body: object) -> dict | None:
    try:
        return schema.load(body)
    except ma.ValidationError:
        return None


@pytest.mark.parametrize("schema", BODY_SCHEMAS, ids=lambda s: type(s).__name__)
def test_every_body_schema_of_the_hot_paths_has_a_loader(schema):
    assert simple_loader(schema) is not None


@pytest.mark.parametrize("schema", BODY_SCHEMAS, ids=lambda s: type(s).__name__)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_loader_accepts_only_what_marshmallow_loads_and_loads_it_alike(schema, data):
    load = simple_loader(schema)
    body = data.draw(_bodies(schema))
    fast = load(body)
    slow = _marshmallow(schema, body)
    if fast is not None:
        assert fast == slow
    elif isinstance(body, dict) and set(body) <= set(_names(schema)):
        # Declined: marshmallow must refuse it too, unless a value merely is not one the
        # loader vouches for; every valid text body is taken on the fast path.
        plain = all(isinstance(v, str) or v is None for v in body.values())
        if plain and slow is not None:
            pytest.fail(f"the loader declined a body marshmallow loads: {body!r}")


def test_the_loader_applies_defaults_and_refuses_unknown_keys():
    load = simple_loader(schemas.RegisterArgsSchema())
    assert load({"email": "a@example.com", "password": "p"}) == {
        "email": "a@example.com",
        "password": "p",
        "name": None,
    }
    assert load({"email": "a@example.com", "password": "p", "admin": True}) is None
    assert load({"email": "a@example.com"}) is None


def test_schemas_with_anything_else_get_no_loader():
    class WithHook(schemas.StrictSchema):
        token = schemas.Text(required=True)

        @ma.validates_schema
        def check(self, data, **kwargs):  # pragma: no cover - never called here
            raise ma.ValidationError("no")

    class WithOtherField(schemas.StrictSchema):
        count = ma.fields.Integer()

    class WithOtherValidator(schemas.StrictSchema):
        token = schemas.Text(validate=ma.validate.OneOf(["a"]))

    class NotStrict(ma.Schema):
        token = schemas.Text()

    for schema in (WithHook(), WithOtherField(), WithOtherValidator(), NotStrict()):
        assert simple_loader(schema) is None
    assert simple_loader(schemas.EventsQuerySchema()) is None


def test_invalid_bodies_still_get_marshmallows_422(client):
    for body, field in [
        ({}, "refresh_token"),
        ({"refresh_token": 5}, "refresh_token"),
        ({"refresh_token": "x", "extra": 1}, "extra"),
        ({"refresh_token": "a\x00b"}, "refresh_token"),
        ({"refresh_token": "x" * 513}, "refresh_token"),
    ]:
        r = client.post("/api/auth/refresh", json=body)
        assert r.status_code == 422, body
        assert r.get_json()["code"] == "validation_error"
        assert field in r.get_json()["errors"], body


# --- responses ---------------------------------------------------------------------------

_NAMES = [None, "Ada", "Zoë \u00e9\u4e2d", ""]
_TIMES = [
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
]


def _users():
    for name in _NAMES:
        for created_at in _TIMES:
            yield UserInfo(uuid.uuid4(), "someone@example.com", name, created_at)
            yield UserInfo(uuid.uuid4(), "v@example.com", name, created_at, email_verified=True)


@pytest.mark.parametrize("user", list(_users()), ids=str)
def test_direct_dumps_equal_marshmallows(user):
    user_schema = schemas.UserSchema()
    assert user_schema.dump(user) == ma.Schema.dump(user_schema, user)
    pair = TokenPair(
        access_token="a.b.c",
        refresh_token="r" * 43,
        expires_in=1800,
        refresh_expires_in=604_799,
        user=user,
        session_id=uuid.uuid4(),
    )
    pair_schema = schemas.TokenPairSchema()
    assert pair_schema.dump(pair) == ma.Schema.dump(pair_schema, pair)
    assert set(pair_schema.dump(pair)) == set(pair_schema.fields)
    assert schemas.UserSchema(many=True).dump([user]) == [ma.Schema.dump(user_schema, user)]
    assert schemas.UserSchema(only=("id",)).dump(user) == {"id": str(user.id)}
    assert "user" not in schemas.TokenPairSchema(exclude=("user",)).dump(pair)


def test_responses_keep_the_documented_shape(client):
    pair = client.post(
        "/api/auth/register",
        json={"email": "shape@example.com", "password": PASSWORD, "name": "Shape"},
    ).get_json()
    assert set(pair) == set(schemas.TokenPairSchema().fields)
    me = client.get("/api/auth/me", headers=bearer(pair["access_token"])).get_json()
    # Three ways to the same user: the ORM (register), the bearer lookup, the rotation.
    assert me == pair["user"]
    rotated = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.get_json()["user"] == me
    assert set(me) == {"id", "email", "name", "created_at", "email_verified"}
    spec = client.get("/api/openapi.json").get_json()
    assert set(spec["components"]["schemas"]["TokenPair"]["properties"]) == set(pair)
    assert set(spec["components"]["schemas"]["User"]["properties"]) == set(me)


def test_the_document_shows_email_formats_and_the_configured_password_minimum(make_app):
    """Clients (and the fuzzer) see what the service checks beyond the schemas' lengths."""
    for minimum in (12, 20):
        spec = make_app(PASSWORD_MIN_LENGTH=minimum).test_client().get("/api/openapi.json")
        documented = spec.get_json()["components"]["schemas"]
        for component in ("RegisterArgs", "LoginArgs", "ForgotPasswordArgs"):
            assert documented[component]["properties"]["email"]["format"] == "email"
        for component, field in schemas.NEW_PASSWORD_FIELDS.items():
            assert documented[component]["properties"][field]["minLength"] == minimum
        # A password being checked is not a new one: any length may be tried.
        assert "minLength" not in documented["LoginArgs"]["properties"]["password"]
        assert "minLength" not in documented["ChangePasswordArgs"]["properties"]["current_password"]
