"""Accounts: register, log in, who am I."""

from __future__ import annotations

from ..db import get_engine, get_session
from ..services import accounts
from . import cookies
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .limits import login_throttle, rate_limited
from .parsing import Blueprint
from .schemas import LoginArgsSchema, RegisterArgsSchema, TokenPairSchema, UserSchema

blp = Blueprint("account", __name__, url_prefix="/api/auth", description="Accounts")


@blp.post("/register")
@rate_limited("register")
@blp.arguments(RegisterArgsSchema())
@blp.response(201, TokenPairSchema)
@blp.alt_response(409, description="email_taken")
@blp.alt_response(422, description="validation_error or weak_password")
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def register(args: dict) -> object:
    """Create an account and log it in"""
    pair = accounts.register(
        get_session(), runtime(), args["email"], args["password"], args["name"], client_info()
    )
    return cookies.issue(pair)


@blp.post("/login")
@rate_limited("login")
@blp.arguments(LoginArgsSchema())
@blp.response(200, TokenPairSchema)
@blp.alt_response(401, description="invalid_credentials")
@blp.alt_response(429, description="rate_limited: too many attempts (see Retry-After)")
def login(args: dict) -> object:
    """Log in with email and password"""
    client = client_info()
    with login_throttle(args["email"], client):
        pair = accounts.login(
            get_engine(), get_session, runtime(), args["email"], args["password"], client
        )
    return cookies.issue(pair)


@blp.get("/me")
@blp.doc(security=BEARER_SECURITY)
@bearer_required
@blp.response(200, UserSchema)
@blp.alt_response(401, description="missing, invalid, expired or revoked access token")
def me() -> object:
    """The current user"""
    return current_principal().user
