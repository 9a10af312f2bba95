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
from .parsing import Blueprint
from .schemas import MessageSchema

blp = Blueprint("email", __name__, url_prefix="/api/auth", description="Email addresses")


@blp.post("/verify-email")
@rate_limited("reset_password")
@blp.arguments(EmailTokenArgsSchema())
@blp.response(200, MessageSchema)
@blp.alt_response(400, description="invalid_email_token: unknown, expired or already used")
@blp.alt_response(422, description="validation_error")
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def verify_email(args: dict) -> dict:
    """Verify an email address with the token mailed to it"""
    verification.verify_email(get_session(), runtime(), args["token"], client_info())
    return {"message": verification.EMAIL_VERIFIED}


@blp.post("/resend-verification")
@rate_limited("resend_verification")
@blp.arguments(ResendVerificationArgsSchema())
@blp.response(202, MessageSchema)
@blp.alt_response(422, description="validation_error: not an email address")
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def resend_verification(args: dict) -> dict:
    """Mail the verification link again (the same answer for any address)"""
    verification.resend_verification(get_session(), runtime(), args["email"], client_info())
    return {"message": verification.RESEND_ACCEPTED}


@blp.post("/change-email")
@rate_limited("resend_verification")  # per IP: each request mails an address of its choosing
@blp.doc(security=BEARER_SECURITY)
@bearer_required
@blp.arguments(ChangeEmailArgsSchema())
@blp.response(202, MessageSchema)
@blp.alt_response(401, description="invalid_credentials (wrong password) or bad token")
@blp.alt_response(422, description="validation_error (e.g. the address is already this one)")
@blp.alt_response(429, description="rate_limited (see Retry-After), or too many wrong passwords")
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
@blp.arguments(EmailTokenArgsSchema())
@blp.response(200, MessageSchema)
@blp.alt_response(400, description="invalid_email_token: unknown, expired or already used")
@blp.alt_response(409, description="email_taken: another account has the address now")
@blp.alt_response(422, description="validation_error")
@blp.alt_response(429, description="rate_limited (see Retry-After)")
def confirm_email_change(args: dict) -> dict:
    """Move the account to the new address with the token mailed there"""
    verification.confirm_email_change(get_session(), runtime(), args["token"], client_info())
    return {"message": verification.EMAIL_CHANGED}
