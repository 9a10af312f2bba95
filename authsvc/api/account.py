"""Accounts: register, log in, who am I; delete my account, export my data."""

from __future__ import annotations

from flask import jsonify

from ..db import get_session
from ..services import accounts, lifecycle
from . import cookies
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .lifecycle_schemas import DeleteAccountArgsSchema, ExportSchema
from .limits import login_throttle, rate_limited
from .openapi import BEARER, BODY, DATABASE, LIMITED, REFUSED_BODY, errors
from .parsing import Blueprint
from .schemas import (
    LoginArgsSchema,
    MessageSchema,
    RegisterArgsSchema,
    TokenPairSchema,
    UserSchema,
)

blp = Blueprint("account", __name__, url_prefix="/api/auth", description="Accounts")


@blp.post("/register")
@rate_limited("register")
@blp.doc(operationId="register")
@blp.arguments(RegisterArgsSchema())
@blp.response(201, TokenPairSchema)
@blp.alt_response(
    202,
    schema=MessageSchema,
    description="REQUIRE_VERIFIED_EMAIL=true: the same answer for new and taken addresses; "
    "the mail says what next",
)
@errors(
    blp,
    BODY,
    {
        409: "email_taken: an account with this email exists (only while REQUIRE_VERIFIED_EMAIL "
        "is false)"
    },
    {422: "validation_error (`errors` names each field) or weak_password (the policy's reason)"},
    LIMITED,
    DATABASE,
)
def register(args: dict) -> object:
    """Create an account and log it in (or, with REQUIRE_VERIFIED_EMAIL, mail a link first)"""
    rt, db = runtime(), get_session()
    if rt.settings.REQUIRE_VERIFIED_EMAIL:
        accounts.register_pending(
            db, rt, args["email"], args["password"], args["name"], client_info()
        )
        response = jsonify({"message": accounts.REGISTRATION_ACCEPTED})
        response.status_code = 202
        return response
    pair = accounts.register(db, rt, args["email"], args["password"], args["name"], client_info())
    return cookies.issue(pair)


@blp.post("/login")
@rate_limited("login")
@blp.doc(operationId="login")
@blp.arguments(LoginArgsSchema())
@blp.response(200, TokenPairSchema)
@errors(
    blp,
    BODY,
    {401: "invalid_credentials: unknown email or wrong password (the same answer)"},
    {
        403: "account_disabled, or email_not_verified (REQUIRE_VERIFIED_EMAIL); only after the "
        "right password"
    },
    {429: "rate_limited: too many attempts for this address or account; see Retry-After"},
    DATABASE,
)
def login(args: dict) -> object:
    """Log in with email and password"""
    client = client_info()
    with login_throttle(args["email"], client):
        pair = accounts.login(get_session(), runtime(), args["email"], args["password"], client)
    return cookies.issue(pair)


@blp.get("/me")
@blp.doc(security=BEARER_SECURITY, operationId="getMe")
@bearer_required
@blp.response(200, UserSchema)
@errors(blp, BEARER, DATABASE)
def me() -> object:
    """The current user"""
    return current_principal().user


@blp.delete("/me")
@blp.doc(security=BEARER_SECURITY, operationId="deleteMe")
@bearer_required
@blp.arguments(DeleteAccountArgsSchema())
@blp.response(204)
@errors(
    blp,
    BODY,
    {401: BEARER[401] + "; invalid_credentials: the password is wrong"},
    {429: "rate_limited: too many wrong passwords; see Retry-After"},
    DATABASE,
)
def delete_me(args: dict) -> None:
    """Delete the current user's account (sessions, tokens and personal data go)"""
    p, client = current_principal(), client_info()
    with login_throttle(p.user.email, client):
        lifecycle.delete_own_account(
            get_session(), runtime(), p.user, p.session_id, args["password"]
        )


@blp.get("/me/export")
@blp.doc(security=BEARER_SECURITY, operationId="exportMe")
@bearer_required
@blp.response(200, ExportSchema)
@errors(blp, REFUSED_BODY, BEARER, {404: "not_found: the account was deleted meanwhile"}, DATABASE)
def export_me() -> object:
    """Everything stored about the current user: profile, sessions, security events"""
    return lifecycle.export_account(
        get_session(), runtime(), current_principal().user, client_info()
    )
