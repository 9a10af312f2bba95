"""Request and response schemas. Hand-written: the API must not follow the tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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


# Documentation only: the service validates and normalises emails itself (`normalise_email`),
# and the password policy answers 422 weak_password. `init_api` writes the configured
# PASSWORD_MIN_LENGTH into the document as the new passwords' minLength.
EMAIL = {"format": "email"}
NEW_PASSWORD = {
    "description": "checked against the password policy (SPEC §4): at least PASSWORD_MIN_LENGTH "
    "characters, not a common password, not containing the email's local part"
}
NEW_PASSWORD_FIELDS = {
    "RegisterArgs": "password",
    "ResetPasswordArgs": "new_password",
    "ChangePasswordArgs": "new_password",
}


class RegisterArgsSchema(StrictSchema):
    email = Text(required=True, validate=validate.Length(min=3, max=320), metadata=EMAIL)
    password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(max=MAX_PASSWORD_INPUT),
        metadata=NEW_PASSWORD,
    )
    name = Text(load_default=None, allow_none=True, validate=validate.Length(max=100))


class LoginArgsSchema(StrictSchema):
    email = Text(required=True, validate=validate.Length(max=320), metadata=EMAIL)
    password = Text(required=True, load_only=True, validate=validate.Length(max=MAX_PASSWORD_INPUT))


class RefreshTokenArgsSchema(StrictSchema):
    refresh_token = Text(required=True, load_only=True, validate=validate.Length(min=1, max=512))


def user_body(user: Any) -> dict[str, Any]:
    """What UserSchema dumps of a User or UserInfo, without marshmallow's per-field work
    (/me, and every token pair). tests/test_schemas.py holds the two equal."""
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "created_at": user.created_at.isoformat(),
        "email_verified": user.email_verified,
    }


class _DirectDump(ma.Schema):
    """A response schema whose single objects are dumped by `body` (the documented fields,
    built directly); lists and mappings go through marshmallow."""

    body: Callable[[Any], dict[str, Any]]  # each subclass's own, every field of it

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        plain = not (many or (many is None and self.many) or isinstance(obj, Mapping))
        if plain and not (self.only or self.exclude):  # `body` writes every field
            return self.body(obj)
        return super().dump(obj, many=many)


class UserSchema(_DirectDump):
    id = ma.fields.UUID(required=True)
    email = ma.fields.String(required=True)
    name = ma.fields.String(allow_none=True, required=True)
    created_at = ma.fields.AwareDateTime(required=True)
    email_verified = ma.fields.Boolean(
        required=True, metadata={"description": "a mail sent to this address came back"}
    )

    body = staticmethod(user_body)


class TokenPairSchema(_DirectDump):
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(required=True)
    token_type = ma.fields.String(required=True, metadata={"enum": ["bearer"]})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds left"})
    refresh_expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds left"})
    user = ma.fields.Nested(UserSchema, required=True)

    @staticmethod
    def body(pair: Any) -> dict[str, Any]:
        return {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
            "user": user_body(pair.user),
        }


class LogoutAllSchema(ma.Schema):
    revoked_sessions = ma.fields.Integer(required=True)


class JWKSSchema(ma.Schema):
    keys = ma.fields.List(ma.fields.Dict(), required=True)


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)


class SessionSchema(ma.Schema):
    id = ma.fields.UUID(required=True, metadata={"description": "the access token's sid"})
    created_at = ma.fields.AwareDateTime(required=True)
    last_used_at = ma.fields.AwareDateTime(
        required=True, metadata={"description": "login or last refresh"}
    )
    expires_at = ma.fields.AwareDateTime(
        required=True, metadata={"description": "when the session ends unless refreshed"}
    )
    user_agent = ma.fields.String(required=True, allow_none=True)
    ip_address = ma.fields.String(required=True, allow_none=True)
    current = ma.fields.Boolean(
        required=True, metadata={"description": "the session of the access token used"}
    )


class EventsQuerySchema(StrictSchema):
    limit = ma.fields.Integer(
        load_default=50,
        validate=validate.Range(min=1, max=100),
        metadata={"description": "how many events, newest first (default 50, at most 100)"},
    )


class EventSchema(ma.Schema):
    type = ma.fields.String(required=True)
    created_at = ma.fields.AwareDateTime(required=True)
    ip_address = ma.fields.String(required=True, allow_none=True)
    user_agent = ma.fields.String(required=True, allow_none=True)
    session_id = ma.fields.UUID(required=True, allow_none=True)


class ForgotPasswordArgsSchema(StrictSchema):
    email = Text(required=True, validate=validate.Length(max=320), metadata=EMAIL)


class ResetPasswordArgsSchema(StrictSchema):
    token = Text(
        required=True,
        load_only=True,
        validate=validate.Length(min=1, max=512),
        metadata={"description": "the reset token from the email (its link's `token`)"},
    )
    new_password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(max=MAX_PASSWORD_INPUT),
        metadata=NEW_PASSWORD,
    )


class ChangePasswordArgsSchema(StrictSchema):
    current_password = Text(
        required=True, load_only=True, validate=validate.Length(max=MAX_PASSWORD_INPUT)
    )
    new_password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(max=MAX_PASSWORD_INPUT),
        metadata=NEW_PASSWORD,
    )


class MessageSchema(ma.Schema):
    message = ma.fields.String(required=True)


class IntrospectionArgsSchema(StrictSchema):
    token = Text(required=True, validate=validate.Length(min=1, max=4096))
    token_type_hint = Text(validate=validate.Length(max=64))


class IntrospectionSchema(ma.Schema):
    """RFC 7662 §2.2: `active` only, or the token's claims when it is active."""

    active = ma.fields.Boolean(required=True)
    token_type = ma.fields.String()
    client_id = ma.fields.String()
    iss = ma.fields.String()
    aud = ma.fields.String()
    sub = ma.fields.String()
    sid = ma.fields.String()
    iat = ma.fields.Integer()
    exp = ma.fields.Integer()
    jti = ma.fields.String()
