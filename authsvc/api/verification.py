"""Email addresses: verify one, send the verification link again, change the address."""

from __future__ import annotations

from ..db import get_session
from ..services import verification
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .lifecycle_schemas import (
    ChangeEmailArgsSchema,
    EmailTokenArgsSchema,
    ResendVerificationArgsSchema,
)
from .limits import login_throttle, rate_limited
from .openapi import BEARER, BODY, DATABASE, LIMITED, errors
from .parsing import Blueprint
from .schemas import MessageSchema

blp = Blueprint("email", __name__, url_prefix="/api/auth", description="Email addresses")

DEAD_TOKEN = {400: BODY[400] + "; invalid_email_token: unknown, expired or already used"}


@blp.post("/verify-email")
@rate_limited("reset_password")
@blp.doc(operationId="verifyEmail")
@blp.arguments(EmailTokenArgsSchema())
@blp.response(200, MessageSchema)
@errors(blp, BODY, DEAD_TOKEN, LIMITED, DATABASE)
def verify_email(args: dict) -> dict:
    """Verify an email address with the token mailed to it"""
    verification.verify_email(get_session(), runtime(), args["token"], client_info())
    return {"message": verification.EMAIL_VERIFIED}


@blp.post("/resend-verification")
@rate_limited("resend_verification")
@blp.doc(operationId="resendVerification")
@blp.arguments(ResendVerificationArgsSchema())
@blp.response(202, MessageSchema)
@errors(blp, BODY, {422: "validation_error: not an email address"}, LIMITED, DATABASE)
def resend_verification(args: dict) -> dict:
    """Mail the verification link again (the same answer for any address)"""
    verification.resend_verification(get_session(), runtime(), args["email"], client_info())
    return {"message": verification.RESEND_ACCEPTED}


@blp.post("/change-email")
@rate_limited("resend_verification")  # per IP: each request mails an address of its choosing
@blp.doc(security=BEARER_SECURITY, operationId="changeEmail")
@bearer_required
@blp.arguments(ChangeEmailArgsSchema())
@blp.response(202, MessageSchema)
@errors(
    blp,
    BODY,
    {401: BEARER[401] + "; invalid_credentials: the password is wrong"},
    {
        422: "validation_error (`errors` names each field; also a new address that is "
        "already this account's)"
    },
    {
        429: "rate_limited: too many requests from this network, or too many wrong "
        "passwords; see Retry-After"
    },
    DATABASE,
)
def change_email(args: dict) -> dict:
    """Ask to move the account to a new address: it gets a confirmation link, the old one a
    notice; nothing changes until the link is used"""
    p, client = current_principal(), client_info()
    with login_throttle(p.user.email, client):
        verification.request_email_change(
            get_session(),
            runtime(),
            p.user,
            p.session_id,
            args["password"],
            args["new_email"],
            client,
        )
    return {"message": verification.CHANGE_REQUESTED}


@blp.post("/confirm-email-change")
@rate_limited("reset_password")
@blp.doc(operationId="confirmEmailChange")
@blp.arguments(EmailTokenArgsSchema())
@blp.response(200, MessageSchema)
@errors(
    blp,
    BODY,
    DEAD_TOKEN,
    {409: "email_taken: another account has the new address now"},
    LIMITED,
    DATABASE,
)
def confirm_email_change(args: dict) -> dict:
    """Move the account to the new address with the token mailed there"""
    verification.confirm_email_change(get_session(), runtime(), args["token"], client_info())
    return {"message": verification.EMAIL_CHANGED}
