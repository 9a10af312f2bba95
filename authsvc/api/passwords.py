"""Passwords: forgotten (emailed reset link), reset with the emailed token, changed."""

from __future__ import annotations

from ..db import get_session
from ..services import recovery
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .limits import login_throttle, rate_limited
from .parsing import Blueprint
from .schemas import (
    ChangePasswordArgsSchema,
    ForgotPasswordArgsSchema,
    MessageSchema,
    ResetPasswordArgsSchema,
    TokenPairSchema,
)

blp = Blueprint("passwords", __name__, url_prefix="/api/auth", description="Passwords")


@blp.post("/forgot-password")
@rate_limited("forgot_password")
@blp.arguments(ForgotPasswordArgsSchema())
@blp.response(202, MessageSchema)
@blp.alt_response(422, description="validation_error: not an email address")
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def forgot_password(args: dict) -> dict:
    """Email a password-reset link (the same answer whether or not the account exists)"""
    recovery.forgot_password(get_session(), runtime(), args["email"], client_info())
    return {"message": recovery.RESET_REQUEST_ACCEPTED}


@blp.post("/reset-password")
@rate_limited("reset_password")
@blp.arguments(ResetPasswordArgsSchema())
@blp.response(200, TokenPairSchema)
@blp.alt_response(400, description="invalid_reset_token: unknown, expired or already used")
@blp.alt_response(403, description="account_disabled")
@blp.alt_response(422, description="validation_error or weak_password")
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def reset_password(args: dict) -> object:
    """Set a new password with an emailed reset token; ends every session, logs in here"""
    return recovery.reset_password(
        get_session(), runtime(), args["token"], args["new_password"], client_info()
    )


@blp.post("/change-password")
@blp.doc(security=BEARER_SECURITY)
@bearer_required
@blp.arguments(ChangePasswordArgsSchema())
@blp.response(200, TokenPairSchema)
@blp.alt_response(401, description="invalid_credentials (wrong current password) or bad token")
@blp.alt_response(422, description="validation_error or weak_password")
@blp.alt_response(429, description="rate_limited: too many wrong current passwords")
def change_password(args: dict) -> object:
    """Change the password; ends every other session and renews this one's refresh token"""
    p, client = current_principal(), client_info()
    # A stolen access token must not become a fast password oracle: the same per-account
    # delays as login apply to wrong current passwords.
    with login_throttle(p.user.email, client):
        return recovery.change_password(
            get_session(),
            runtime(),
            p.user,
            p.session_id,
            args["current_password"],
            args["new_password"],
            client,
        )
