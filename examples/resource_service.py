"""A resource service that trusts authsvc's access tokens, verified with the public keys
from authsvc's JWKS only (no shared secret, no call to authsvc per request).

    AUTHSVC_URL=http://127.0.0.1:8000 flask --app examples.resource_service run --port 5001
    curl -H "Authorization: Bearer $ACCESS_TOKEN" localhost:5001/hello

PyJWKClient caches the key set for `jwks_lifespan` seconds and fetches it again when a
token names a kid it has not seen (at most once per `refetch_cooldown`), so authsvc's key
rotations need no restart here either. Keep `jwks_lifespan` below authsvc's
JWT_KEY_PREPUBLISH minus JWT_KEYS_RELOAD_INTERVAL (its JWKS max-age says how long).
Tokens of a revoked session stay valid until they expire (at most ACCESS_TOKEN_TTL); a
service that must know at once calls authsvc's POST /api/auth/introspect instead.
"""

from __future__ import annotations

import os
from functools import wraps

import jwt
from flask import Flask, g, jsonify, request

ALGORITHMS = ["ES256", "EdDSA", "RS256"]  # never "none", never HS256 with a public key


def create_app(
    authsvc_url: str | None = None,
    issuer: str = "authsvc",
    audience: str = "authsvc",
    jwks_lifespan: float = 300,
    refetch_cooldown: float = 30,
) -> Flask:
    app = Flask(__name__)
    base = (authsvc_url or os.environ.get("AUTHSVC_URL", "http://127.0.0.1:8000")).rstrip("/")
    jwks = jwt.PyJWKClient(
        f"{base}/.well-known/jwks.json",
        cache_keys=True,
        lifespan=jwks_lifespan,
        cooldown_duration=refetch_cooldown,
    )

    def require_token(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _unauthorized("missing bearer token")
            try:
                if jwt.get_unverified_header(token).get("typ") != "at+jwt":
                    return _unauthorized("not an access token")
                key = jwks.get_signing_key_from_jwt(token)
                g.claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=ALGORITHMS,
                    issuer=issuer,
                    audience=audience,
                    options={"require": ["exp", "iat", "sub", "sid"]},
                    leeway=10,
                )
            except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
                return _unauthorized(str(exc))
            return view(*args, **kwargs)

        return wrapper

    @app.get("/hello")
    @require_token
    def hello():
        return jsonify(message="hello", user_id=g.claims["sub"], session_id=g.claims["sid"])

    return app


def _unauthorized(reason: str):
    response = jsonify(error="invalid_token", detail=reason)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response
