"""Refresh tokens: rotate, log out one session, log out everywhere."""

from __future__ import annotations

from ..db import get_session
from ..errors import RefreshTokenReused, Unauthorized
from ..services import tokens
from . import cookies
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .limits import rate_limited
from .openapi import BEARER, BODY, CSRF, DATABASE, LIMITED, REFUSED_BODY, errors
from .parsing import Blueprint
from .schemas import LogoutAllSchema, RefreshTokenArgsSchema, TokenPairSchema

blp = Blueprint("tokens", __name__, url_prefix="/api/auth", description="Tokens")


@blp.post("/refresh")
@rate_limited("refresh")
@blp.doc(operationId="refreshToken")
@blp.arguments(RefreshTokenArgsSchema())
@blp.response(200, TokenPairSchema)
@errors(
    blp,
    BODY,
    {
        401: "invalid_token (unknown, expired or revoked) or refresh_token_reused (spent "
        "before: the session is revoked)"
    },
    {403: CSRF[403] + "; account_disabled, or email_not_verified (REQUIRE_VERIFIED_EMAIL)"},
    LIMITED,
    DATABASE,
)
def refresh(args: dict) -> object:
    """Exchange a refresh token (body, else cookie) for a new pair; the token is spent"""
    token = cookies.presented_refresh_token(args)
    try:
        pair = tokens.rotate_refresh_token(get_session(), runtime(), token, client_info())
    except RefreshTokenReused:
        cookies.clear()  # the session is revoked
        raise
    except Unauthorized:
        cookies.clear_if_held(token)  # a dead cookie is no use to keep
        raise
    return cookies.issue(pair)


@blp.post("/logout")
@blp.doc(operationId="logout")
@blp.arguments(RefreshTokenArgsSchema())
@blp.response(204)
@errors(blp, BODY, CSRF, DATABASE)
def logout(args: dict) -> None:
    """End the session of a refresh token (body, else cookie); idempotent, clears the cookie"""
    token = cookies.presented_refresh_token(args, optional=True)
    if token is not None:
        tokens.logout(get_session(), runtime(), token, client_info())
    cookies.clear_if_held(token)


@blp.post("/logout-all")
@blp.doc(security=BEARER_SECURITY, operationId="logoutAll")
@bearer_required
@blp.response(200, LogoutAllSchema)
@errors(blp, BEARER, REFUSED_BODY, DATABASE)
def logout_all() -> dict:
    """End every session of the current user, this one included"""
    p = current_principal()
    count = tokens.logout_all(get_session(), runtime(), p.user.id, p.session_id, client_info())
    cookies.clear()
    return {"revoked_sessions": count}
