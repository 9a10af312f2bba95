"""The admin API (/api/admin) for service clients holding the `admin` scope: find, show,
disable, enable, delete, log out and unlock accounts. User access tokens never administer."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from ..db import get_session
from ..errors import InsufficientScope
from ..services import admin, clients
from ..services.common import parse_uuid
from .auth import client_info, runtime
from .introspection import BASIC_SECURITY, client_credentials
from .lifecycle_schemas import AccountPageSchema, AccountQuerySchema, AccountSchema
from .openapi import DATABASE, REFUSED_BODY, errors
from .parsing import Blueprint
from .schemas import LogoutAllSchema

blp = Blueprint("admin", __name__, url_prefix="/api/admin", description="Administration")

ADMIN_SCOPE = "admin"
# Every admin operation: Basic client credentials of a client with the admin scope.
ADMIN = {
    401: "invalid_client: no or wrong client credentials (HTTP Basic)",
    403: "insufficient_scope: a user access token, or a client without the admin scope",
}
NOT_FOUND = {404: "not_found: no such account (or an id that is not a UUID)"}


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Only a service client with the admin scope passes; the acting client is g.admin."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
        if scheme == "bearer":
            raise InsufficientScope("user access tokens cannot administer; use a service client")
        client = clients.authenticate_client(get_session(), *client_credentials())
        if not clients.has_scope(client, ADMIN_SCOPE):
            raise InsufficientScope("this client lacks the admin scope")
        g.admin_client_id = client.id
        return view(*args, **kwargs)

    return wrapper


def _by() -> dict[str, str]:
    return {"by_client": g.admin_client_id}


def _throttle() -> Any:
    limits = current_app.extensions.get("authsvc_limits")
    return limits.throttle if limits is not None else None


def _documented(operation_id: str, status: int, schema: Any = None) -> Callable:
    """An account operation's decorators: Basic auth first, the answer and its errors."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        view = errors(blp, REFUSED_BODY, ADMIN, NOT_FOUND, DATABASE)(view)
        view = blp.response(status, schema)(view)
        view = admin_required(view)
        return blp.doc(security=BASIC_SECURITY, operationId=operation_id)(view)

    return decorate


@blp.get("/users")
@blp.doc(security=BASIC_SECURITY, operationId="adminListUsers")
@admin_required
@blp.arguments(AccountQuerySchema(), location="query")
@blp.response(200, AccountPageSchema)
@errors(
    blp,
    REFUSED_BODY,
    ADMIN,
    {422: "validation_error: a query parameter is unknown or out of range (`errors` names each)"},
    DATABASE,
)
def list_users(args: dict) -> dict:
    """List accounts, oldest first; filter by part of the email"""
    items, total = admin.list_accounts(
        get_session(), runtime(), args.get("email"), args["page"], args["per_page"]
    )
    return {"items": items, "total": total, "page": args["page"], "per_page": args["per_page"]}


@blp.get("/users/<user_id>")
@_documented("adminGetUser", 200, AccountSchema)
def show_user(user_id: str) -> object:
    """One account"""
    return admin.get_account(get_session(), runtime(), parse_uuid(user_id))


@blp.post("/users/<user_id>/disable")
@_documented("adminDisableUser", 200, AccountSchema)
def disable_user(user_id: str) -> object:
    """Disable an account: every session ends now, nothing signs in until enabled"""
    return admin.disable(get_session(), runtime(), parse_uuid(user_id), _by(), client_info())


@blp.post("/users/<user_id>/enable")
@_documented("adminEnableUser", 200, AccountSchema)
def enable_user(user_id: str) -> object:
    """Enable a disabled account"""
    return admin.enable(get_session(), runtime(), parse_uuid(user_id), _by(), client_info())


@blp.delete("/users/<user_id>")
@_documented("adminDeleteUser", 204)
def delete_user(user_id: str) -> None:
    """Delete an account (its security events stay, without personal data)"""
    admin.delete(get_session(), runtime(), parse_uuid(user_id), _by(), client_info())


@blp.post("/users/<user_id>/logout")
@_documented("adminLogoutUser", 200, LogoutAllSchema)
def logout_user(user_id: str) -> dict:
    """End every session of an account"""
    count = admin.logout(get_session(), runtime(), parse_uuid(user_id), _by(), client_info())
    return {"revoked_sessions": count}


@blp.post("/users/<user_id>/unlock")
@_documented("adminUnlockUser", 204)
def unlock_user(user_id: str) -> None:
    """Forget an account's failed logins (the login throttle's delays end now)"""
    admin.unlock(get_session(), runtime(), parse_uuid(user_id), _throttle(), _by(), client_info())
