"""Outside /api/auth: the JWKS, liveness and readiness."""

from __future__ import annotations

from flask import current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..db import get_session
from ..errors import ServiceUnavailable
from .auth import runtime
from .parsing import Blueprint
from .schemas import HealthSchema, JWKSSchema

blp = Blueprint("operations", __name__, description="Keys and health")


@blp.get("/.well-known/jwks.json")
@blp.response(200, JWKSSchema)
def jwks() -> object:
    """Public keys that verify access tokens (RFC 7517)"""
    keys = runtime().keys
    response = jsonify(keys.jwks())
    # Short enough that a newly published key is seen well before it starts signing.
    response.headers["Cache-Control"] = f"public, max-age={keys.jwks_max_age}"
    return response


@blp.get("/healthz")
@blp.response(200, HealthSchema)
def healthz() -> dict:
    """The process is alive"""
    return {"status": "ok"}


@blp.get("/readyz")
@blp.response(200, HealthSchema)
@blp.alt_response(503, description="database unreachable or schema not at the Alembic head")
def readyz() -> dict:
    """The database is reachable and its schema is at the Alembic head"""
    head = current_app.extensions["authsvc_schema_head"]
    try:
        version = get_session().execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        raise ServiceUnavailable("the database is unreachable or not migrated") from None
    if version != head:
        raise ServiceUnavailable("the database schema is not at the expected migration")
    return {"status": "ready"}
