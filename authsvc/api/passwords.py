"""Passwords: forgotten (emailed reset link), reset with the emailed token, changed."""

from __future__ import annotations

from ..db import get_session
from ..services import recovery
from . import cookies
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .limits import login_throttle, rate_limited
from .openapi import BEARER, BODY, DATABASE, LIMITED, errors
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
@blp.doc(operationId="forgotPassword")
@blp.arguments(ForgotPasswordArgsSchema())
@blp.response(202, MessageSchema)
@errors(blp, BODY, {422: "validation_error: not an email address"}, LIMITED, DATABASE)
def forgot_password(args: dict) -> dict:
    """Email a password-reset link (the same answer whether or not the account exists)"""
    recovery.forgot_password(get_session(), runtime(), args["email"], client_info())
    return {"message": recovery.RESET_REQUEST_ACCEPTED}


@blp.post("/reset-password")
@rate_limited("reset_password")
@blp.doc(operationId="resetPassword")
@blp.arguments(ResetPasswordArgsSchema())
@blp.response(200, TokenPairSchema)
@errors(
    blp,
    BODY,
    {400: BODY[400] + "; invalid_reset_token: unknown, expired or already used"},
    {422: "validation_error (`errors` names each field) or weak_password (the policy's reason)"},
    {403: "account_disabled"},
    LIMITED,
    DATABASE,
)
def reset_password(args: dict) -> object:
    """Set a new password with an emailed reset token; ends every session, logs in here"""
    pair = recovery.reset_password(
        get_session(), runtime(), args["token"], args["new_password"], client_info()
    )
    return cookies.issue(pair)


@blp.post("/change-password")
@blp.doc(security=BEARER_SECURITY, operationId="changePassword")
@bearer_required
@blp.arguments(ChangePasswordArgsSchema())
@blp.response(200, TokenPairSchema)
@errors(
    blp,
    BODY,
    {401: BEARER[401] + "; invalid_credentials: the current password is wrong"},
    {422: "validation_error (`errors` names each field) or weak_password (the policy's reason)"},
    {429: "rate_limited: too many wrong current passwords; see Retry-After"},
    DATABASE,
)
def change_password(args: dict) -> object:
    """Change the password; ends every other session and renews this one's refresh token"""
    p, client = current_principal(), client_info()
    # A stolen access token must not become a fast password oracle: the same per-account
    # delays as login apply to wrong current passwords.
    with login_throttle(p.user.email, client):
        pair = recovery.change_password(
            get_session(),
            runtime(),
            p.user,
            p.session_id,
            args["current_password"],
            args["new_password"],
            client,
        )
    return cookies.issue(pair)
