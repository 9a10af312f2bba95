"""Request and response schemas. Hand-written: the API must not follow the tables."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from ..services.events import EVENT_TYPES

# A ceiling on any password input, refused before any hashing. The policy's own maximum
# (PASSWORD_MAX_LENGTH, at most this) is what the document shows: `init_api` writes it in.
MAX_PASSWORD_INPUT = 1024


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
# PASSWORD_MIN_LENGTH and PASSWORD_MAX_LENGTH into the document.
EMAIL = {"format": "email"}
NEW_PASSWORD = {
    "description": "checked against the password policy: within the configured length limits, "
    "not a common password, not containing the email's local part (422 weak_password)"
}
NEW_PASSWORD_FIELDS = {
    "RegisterArgs": "password",
    "ResetPasswordArgs": "new_password",
    "ChangePasswordArgs": "new_password",
}
PASSWORD_FIELDS = [
    *NEW_PASSWORD_FIELDS.items(),
    ("LoginArgs", "password"),
    ("ChangePasswordArgs", "current_password"),
]


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


COOKIE_NOTE = "absent when the refresh cookie carries it (REFRESH_TOKEN_TRANSPORT)"


class RefreshTokenArgsSchema(StrictSchema):
    refresh_token = Text(
        load_only=True,
        validate=validate.Length(min=1, max=512),
        metadata={"description": COOKIE_NOTE},
    )


class UserSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    email = ma.fields.String(required=True)
    name = ma.fields.String(allow_none=True, required=True)
    created_at = ma.fields.AwareDateTime(required=True)
    email_verified = ma.fields.Boolean(
        required=True, metadata={"description": "a mail sent to this address came back"}
    )


class TokenPairSchema(ma.Schema):
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(metadata={"description": COOKIE_NOTE})
    token_type = ma.fields.String(required=True, metadata={"enum": ["bearer"]})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds left"})
    refresh_expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds left"})
    user = ma.fields.Nested(UserSchema, required=True)


class LogoutAllSchema(ma.Schema):
    revoked_sessions = ma.fields.Integer(required=True)


class JWKSSchema(ma.Schema):
    keys = ma.fields.List(ma.fields.Dict(), required=True)


class ServerMetadataSchema(ma.Schema):
    """OAuth 2.0 Authorization Server Metadata (RFC 8414), what applies to authsvc."""

    issuer = ma.fields.String(
        required=True, metadata={"description": "the `iss` of every access token"}
    )
    jwks_uri = ma.fields.String(required=True)
    introspection_endpoint = ma.fields.String(required=True)
    introspection_endpoint_auth_methods_supported = ma.fields.List(
        ma.fields.String(), required=True
    )
    response_types_supported = ma.fields.List(ma.fields.String(), required=True)
    service_documentation = ma.fields.String()


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
    type = ma.fields.String(required=True, metadata={"enum": sorted(EVENT_TYPES)})
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
