"""Devices and security events: the caller's sessions, revoking one, recent events."""

from __future__ import annotations

from ..db import get_session
from ..services import sessions
from ..services.common import parse_uuid
from . import cookies
from .auth import BEARER_SECURITY, bearer_required, client_info, current_principal, runtime
from .openapi import BEARER, DATABASE, REFUSED_BODY, errors
from .parsing import Blueprint
from .schemas import EventSchema, EventsQuerySchema, SessionSchema

blp = Blueprint("sessions", __name__, url_prefix="/api/auth", description="Sessions and events")


@blp.get("/sessions")
@blp.doc(security=BEARER_SECURITY, operationId="listSessions")
@bearer_required
@blp.response(200, SessionSchema(many=True))
@errors(blp, BEARER, DATABASE)
def list_sessions() -> object:
    """The current user's active sessions (devices), newest first"""
    p = current_principal()
    return sessions.list_sessions(get_session(), runtime(), p.user.id, p.session_id)


# A string, not a uuid converter: a malformed id must get the same 404 as anyone else's.
@blp.delete("/sessions/<session_id>")
@blp.doc(security=BEARER_SECURITY, operationId="revokeSession")
@bearer_required
@blp.response(204)
@errors(
    blp,
    BEARER,
    REFUSED_BODY,
    {404: "not_found: no active session of the caller has this id"},
    DATABASE,
)
def revoke_session(session_id: str) -> None:
    """Revoke one of the current user's sessions (log that device out)"""
    p, target = current_principal(), parse_uuid(session_id)
    sessions.revoke_own_session(
        get_session(), runtime(), p.user.id, target, p.session_id, client_info()
    )
    if target == p.session_id:
        cookies.clear()  # this device signed itself out


@blp.get("/events")
@blp.doc(security=BEARER_SECURITY, operationId="listEvents")
@bearer_required
@blp.arguments(EventsQuerySchema(), location="query")
@blp.response(200, EventSchema(many=True))
@errors(blp, BEARER, {422: "validation_error: limit is not 1 to 100"}, DATABASE)
def list_events(args: dict) -> object:
    """The current user's recent security events, newest first"""
    return sessions.list_events(get_session(), current_principal().user.id, args["limit"])
