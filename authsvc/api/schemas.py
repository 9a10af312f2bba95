"""Request and response schemas. Hand-written: the API must not follow the tables."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

MAX_PASSWORD_INPUT = 1024  # policy allows 256; longer input is refused before any hashing


class Text(ma.fields.String):
    """A string that PostgreSQL and UTF-8 can hold: no NUL, no lone surrogates."""

    def _deserialize(self, value, attr, data, **kwargs):  # type: ignore[no-untyped-def]
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ma.ValidationError("Must not contain NUL characters.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ma.ValidationError("Must be valid Unicode text.") from None
        return text


class StrictSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class RegisterArgsSchema(StrictSchema):
    email = Text(required=True, validate=validate.Length(min=3, max=320))
    password = Text(required=True, load_only=True, validate=validate.Length(max=MAX_PASSWORD_INPUT))
    name = Text(load_default=None, allow_none=True, validate=validate.Length(max=100))


class LoginArgsSchema(StrictSchema):
    email = Text(required=True, validate=validate.Length(max=320))
    password = Text(required=True, load_only=True, validate=validate.Length(max=MAX_PASSWORD_INPUT))


class RefreshTokenArgsSchema(StrictSchema):
    refresh_token = Text(required=True, load_only=True, validate=validate.Length(min=1, max=512))


class UserSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    email = ma.fields.String(required=True)
    name = ma.fields.String(allow_none=True, required=True)
    created_at = ma.fields.AwareDateTime(required=True)


class TokenPairSchema(ma.Schema):
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(required=True)
    token_type = ma.fields.String(required=True, metadata={"enum": ["bearer"]})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds left"})
    refresh_expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds left"})
    user = ma.fields.Nested(UserSchema, required=True)


class LogoutAllSchema(ma.Schema):
    revoked_sessions = ma.fields.Integer(required=True)


class JWKSSchema(ma.Schema):
    keys = ma.fields.List(ma.fields.Dict(), required=True)


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)
