"""Schemas of the account-lifecycle operations: email verification and change, deletion,
export, and the admin API."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from .schemas import EMAIL, MAX_PASSWORD_INPUT, StrictSchema, Text

TOKEN_FIELD = {"validate": validate.Length(min=1, max=512), "load_only": True}


class EmailTokenArgsSchema(StrictSchema):
    token = Text(
        required=True,
        metadata={"description": "the token from the email (its link's `token`)"},
        **TOKEN_FIELD,
    )


class ResendVerificationArgsSchema(StrictSchema):
    email = Text(required=True, validate=validate.Length(max=320), metadata=EMAIL)


class ChangeEmailArgsSchema(StrictSchema):
    password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(max=MAX_PASSWORD_INPUT),
        metadata={"description": "the current password"},
    )
    new_email = Text(required=True, validate=validate.Length(min=3, max=320), metadata=EMAIL)


class DeleteAccountArgsSchema(StrictSchema):
    password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(max=MAX_PASSWORD_INPUT),
        metadata={"description": "the current password, to confirm"},
    )


class ExportProfileSchema(ma.Schema):
    """An account's profile (queries.profile_fields), in its export and to operators."""

    id = ma.fields.UUID(required=True)
    email = ma.fields.String(required=True)
    name = ma.fields.String(required=True, allow_none=True)
    created_at = ma.fields.AwareDateTime(required=True)
    password_changed_at = ma.fields.AwareDateTime(required=True)
    email_verified = ma.fields.Boolean(required=True)
    email_verified_at = ma.fields.AwareDateTime(required=True, allow_none=True)


class ExportSessionSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    created_at = ma.fields.AwareDateTime(required=True)
    last_used_at = ma.fields.AwareDateTime(required=True)
    expires_at = ma.fields.AwareDateTime(required=True)
    revoked_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    revoke_reason = ma.fields.String(required=True, allow_none=True)
    user_agent = ma.fields.String(required=True, allow_none=True)
    ip_address = ma.fields.String(required=True, allow_none=True)


class ExportEventSchema(ma.Schema):
    type = ma.fields.String(required=True)
    created_at = ma.fields.AwareDateTime(required=True)
    ip_address = ma.fields.String(required=True, allow_none=True)
    user_agent = ma.fields.String(required=True, allow_none=True)
    session_id = ma.fields.UUID(required=True, allow_none=True)
    details = ma.fields.Dict(required=True, allow_none=True)


class ExportSchema(ma.Schema):
    format = ma.fields.Integer(required=True, metadata={"description": "1"})
    exported_at = ma.fields.AwareDateTime(required=True)
    profile = ma.fields.Nested(ExportProfileSchema, required=True)
    sessions = ma.fields.List(
        ma.fields.Nested(ExportSessionSchema),
        required=True,
        metadata={"description": "every session kept, ended ones included, newest first"},
    )
    events = ma.fields.List(
        ma.fields.Nested(ExportEventSchema),
        required=True,
        metadata={"description": "every security event kept, newest first"},
    )


class AccountSchema(ExportProfileSchema):
    """An account as operators see it: its profile, its state and its live sessions."""

    disabled = ma.fields.Boolean(required=True)
    disabled_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    active_sessions = ma.fields.Integer(required=True)


class AccountPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(AccountSchema), required=True)
    total = ma.fields.Integer(required=True, metadata={"description": "matching accounts"})
    page = ma.fields.Integer(required=True)
    per_page = ma.fields.Integer(required=True)


class AccountQuerySchema(StrictSchema):
    email = Text(
        validate=validate.Length(min=1, max=320),
        metadata={"description": "only accounts whose email contains this (any case)"},
    )
    page = ma.fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = ma.fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
