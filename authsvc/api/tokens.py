"""Refresh tokens: rotate, log out one session, log out everywhere."""

from __future__ import annotations

from ..db import get_session
from ..services import tokens
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .limits import rate_limited
from .parsing import Blueprint
from .schemas import LogoutAllSchema, RefreshTokenArgsSchema, TokenPairSchema

blp = Blueprint("tokens", __name__, url_prefix="/api/auth", description="Tokens")


@blp.post("/refresh")
@rate_limited("refresh")
@blp.arguments(RefreshTokenArgsSchema())
@blp.response(200, TokenPairSchema)
@blp.alt_response(401, description="invalid_token or refresh_token_reused")
@blp.alt_response(
    403, description="account_disabled, or email_not_verified (REQUIRE_VERIFIED_EMAIL)"
)
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def refresh(args: dict) -> object:
    """Exchange a refresh token for a new pair (the presented token is spent)"""
    return tokens.rotate_refresh_token(
        get_session(), runtime(), args["refresh_token"], client_info()
    )


@blp.post("/logout")
@blp.arguments(RefreshTokenArgsSchema())
@blp.response(204)
def logout(args: dict) -> None:
    """End the session of a refresh token (idempotent; unknown tokens also get 204)"""
    tokens.logout(get_session(), runtime(), args["refresh_token"], client_info())


@blp.post("/logout-all")
@blp.doc(security=BEARER_SECURITY)
@bearer_required
@blp.response(200, LogoutAllSchema)
@blp.alt_response(401, description="missing, invalid, expired or revoked access token")
def logout_all() -> dict:
    """End every session of the current user, this one included"""
    p = current_principal()
    count = tokens.logout_all(get_session(), runtime(), p.user.id, p.session_id, client_info())
    return {"revoked_sessions": count}
