"""Accounts: register, log in, who am I."""

from __future__ import annotations

from ..db import get_session
from ..services import accounts
from . import cookies
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .limits import login_throttle, rate_limited
from .openapi import BEARER, BODY, DATABASE, LIMITED, errors
from .parsing import Blueprint
from .schemas import LoginArgsSchema, RegisterArgsSchema, TokenPairSchema, UserSchema

blp = Blueprint("account", __name__, url_prefix="/api/auth", description="Accounts")


@blp.post("/register")
@rate_limited("register")
@blp.doc(operationId="register")
@blp.arguments(RegisterArgsSchema())
@blp.response(201, TokenPairSchema)
@errors(
    blp,
    BODY,
    {409: "email_taken: an account with this email exists"},
    {422: "validation_error (`errors` names each field) or weak_password (the policy's reason)"},
    LIMITED,
    DATABASE,
)
def register(args: dict) -> object:
    """Create an account and log it in"""
    pair = accounts.register(
        get_session(), runtime(), args["email"], args["password"], args["name"], client_info()
    )
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
