"""Email addresses: verify one (the link mailed on registration), send that link again, and
move an account to a new address (confirmed from that address; the old one is told)."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import queries as q
from ..db import transaction
from ..errors import EmailTaken, InvalidCredentials, InvalidEmailToken, ValidationFailed
from ..models import PasswordResetToken, User
from ..runtime import Runtime
from .accounts import normalise_email, record_failed_login
from .common import ClientInfo, UserInfo
from .email_tokens import (
    CHANGE,
    VERIFY,
    send_change_confirmation,
    send_verification,
    spend_email_token,
    void_email_tokens,
)
from .events import record_event
from .notices import mail_after_commit, notify

RESEND_ACCEPTED = (
    "If this address belongs to an account that still needs verifying, a new link is on its way."
)
EMAIL_VERIFIED = "Your email address is verified."
CHANGE_REQUESTED = "Check the new address: a message there says how to confirm the change."
EMAIL_CHANGED = "Your email address has been changed."
DEAD_LINK = "the token is invalid, expired or already used"


def resend_verification(db: Session, rt: Runtime, email: str, client: ClientInfo) -> None:
    """Mail a new verification link (voiding the older one) to an enabled, unverified
    account; the same answer, and no mail, for anything else."""
    email = normalise_email(email)  # 422 for what is not an email address at all
    now = rt.clock()
    with transaction(db):
        user = db.execute(
            select(User.id, User.email)
            .where(User.email == email, ~q.email_verified(), q.account_active())
            .with_for_update()
        ).first()
        if user is not None:
            send_verification(db, rt, user.id, user.email, now)


def verify_email(db: Session, rt: Runtime, raw: str, client: ClientInfo) -> None:
    """Spend a verification token: the address it was mailed to is verified, provided it is
    still the account's address."""
    now = rt.clock()
    with transaction(db):
        spent = spend_email_token(db, raw, VERIFY, now)
        if spent is None:
            raise InvalidEmailToken(DEAD_LINK)
        verified = db.execute(
            update(User)
            .where(User.id == spent.user_id, User.email == spent.email)
            .values(email_verified_at=now)
            .returning(User.id)
        ).first()
        if verified is None:  # the account moved to another address since
            raise InvalidEmailToken(DEAD_LINK)
        record_event(db, "email_verified", now=now, client=client, user_id=spent.user_id)


def request_email_change(
    db: Session,
    rt: Runtime,
    user: UserInfo,
    session_id: uuid.UUID,
    password: str,
    new_email: str,
    client: ClientInfo,
) -> None:
    """Check the password, then mail the new address a confirmation link and tell the old
    one. A new address that another account holds gets a notice instead of a link, and the
    caller the same answer."""
    new_email = normalise_email(new_email)
    verified_hash = db.scalar(select(User.password_hash).where(User.id == user.id))
    if verified_hash is None:  # the account was deleted since the bearer check
        raise InvalidCredentials("the password is incorrect")
    if not rt.passwords.verify(verified_hash, password):
        record_failed_login(
            db, rt, client, user.id, session_id=session_id, details={"method": "change_email"}
        )
        raise InvalidCredentials("the password is incorrect")
    if new_email == user.email:
        raise ValidationFailed.field("new_email", "is already this account's address")
    now = rt.clock()
    with transaction(db):
        taken = db.scalar(select(User.id).where(User.email == new_email)) is not None
        if taken:
            mail_after_commit(
                db, rt.settings, "email_taken", to=new_email, now=now, attempt="change"
            )
        else:
            send_change_confirmation(db, rt, user.id, new_email, now)
        mail_after_commit(
            db, rt.settings, "email_change_requested", to=user.email, now=now, new_email=new_email
        )
        record_event(
            db,
            "email_change_requested",
            now=now,
            client=client,
            user_id=user.id,
            session_id=session_id,
        )


def confirm_email_change(db: Session, rt: Runtime, raw: str, client: ClientInfo) -> None:
    """Spend a change token: the account moves to the (now verified) address it was mailed
    to; links mailed to the old address die, and the old address is told."""
    now = rt.clock()
    try:
        with transaction(db):
            spent = spend_email_token(db, raw, CHANGE, now)
            if spent is None:
                raise InvalidEmailToken(DEAD_LINK)
            old = db.scalar(select(User.email).where(User.id == spent.user_id).with_for_update())
            if old is None:
                raise InvalidEmailToken(DEAD_LINK)
            if db.scalar(select(User.id).where(User.email == spent.email)) is not None:
                raise EmailTaken("another account has this email address now")
            db.execute(
                update(User)
                .where(User.id == spent.user_id)
                .values(email=spent.email, email_verified_at=now)
            )
            void_email_tokens(db, spent.user_id, now)
            db.execute(
                update(PasswordResetToken)
                .where(
                    PasswordResetToken.user_id == spent.user_id,
                    PasswordResetToken.used_at.is_(None),
                )
                .values(used_at=now)
            )
            record_event(db, "email_changed", now=now, client=client, user_id=spent.user_id)
            notify(
                db,
                rt.settings,
                "NOTIFY_EMAIL_CHANGED",
                "email_changed",
                to=old,
                now=now,
                new_email=spent.email,
            )
    except IntegrityError:  # another account took the address meanwhile
        raise EmailTaken("another account has this email address now") from None
