"""Outside /api/auth: discovery (RFC 8414), the JWKS, liveness and readiness."""

from __future__ import annotations

from flask import current_app, jsonify, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..db import get_session
from ..errors import ServiceUnavailable
from .auth import runtime
from .openapi import DATABASE, errors
from .parsing import Blueprint
from .schemas import HealthSchema, JWKSSchema, ServerMetadataSchema

blp = Blueprint("operations", __name__, description="Discovery, keys and health")
METADATA_MAX_AGE = 300


@blp.get("/.well-known/oauth-authorization-server")
@blp.doc(operationId="getServerMetadata")
@blp.response(200, ServerMetadataSchema)
def server_metadata() -> object:
    """Discovery for resource servers: the issuer and where its keys are (RFC 8414)"""
    settings = runtime().settings
    # PUBLIC_URL is required in production; without it (development) the URLs follow the
    # address this request came to.
    base = settings.PUBLIC_URL or request.host_url.rstrip("/")
    metadata = {
        "issuer": settings.JWT_ISSUER,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "introspection_endpoint": f"{base}/api/auth/introspect",
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "response_types_supported": [],  # no authorization endpoint: tokens come from /login
    }
    if settings.API_DOCS_ENABLED:
        metadata["service_documentation"] = f"{base}/api/docs"
    response = jsonify(ServerMetadataSchema().dump(metadata))
    response.headers["Cache-Control"] = f"public, max-age={METADATA_MAX_AGE}"
    return response


@blp.get("/.well-known/jwks.json")
@blp.doc(operationId="getJwks")
@blp.response(200, JWKSSchema)
@errors(blp, DATABASE)
def jwks() -> object:
    """Public keys that verify access tokens (RFC 7517)"""
    keys = runtime().keys
    response = jsonify(keys.jwks())
    # Short enough that a newly published key is seen well before it starts signing.
    response.headers["Cache-Control"] = f"public, max-age={keys.jwks_max_age}"
    return response


@blp.get("/healthz")
@blp.doc(operationId="health")
@blp.response(200, HealthSchema)
def healthz() -> dict:
    """The process is alive"""
    return {"status": "ok"}


@blp.get("/readyz")
@blp.doc(operationId="ready")
@blp.response(200, HealthSchema)
@errors(blp, {503: "service_unavailable: database unreachable or schema not at the Alembic head"})
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
