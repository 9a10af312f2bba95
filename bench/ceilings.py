"""Ceilings for the benchmark, served by gunicorn with the same settings as authsvc.

- `create_hello_app()`: a bare Flask "hello" endpoint, the most any Flask view can do here.
- `create_jwt_app()`: a Flask endpoint that verifies one ES256 access token per request
  (algorithm pinned, `typ`, `iss`, `aud`, `exp` and the required claims checked, as a
  resource server would) against a public key from `BENCH_JWT_PUBLIC_KEY_FILE`.

`mint_jwt_fixture(directory)` makes the key pair and a token for the second one.

    gunicorn -c gunicorn.conf.py 'bench.ceilings:create_hello_app()'
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, jsonify, request

ISSUER = "authsvc-bench"
AUDIENCE = "authsvc-bench"
KID = "bench-es256"
KEY_ENV = "BENCH_JWT_PUBLIC_KEY_FILE"


def create_hello_app() -> Flask:
    app = Flask("hello")

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    return app


def create_jwt_app() -> Flask:
    public_key = serialization.load_pem_public_key(Path(os.environ[KEY_ENV]).read_bytes())
    app = Flask("verify_jwt")

    @app.get("/")
    def verify() -> tuple[object, int]:
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if jwt.get_unverified_header(token).get("typ") != "at+jwt":
                raise jwt.InvalidTokenError("not an access token")
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]},
            )
        except jwt.InvalidTokenError:
            return jsonify(error="invalid_token"), 401
        return jsonify(sub=claims["sub"]), 200

    return app


def mint_jwt_fixture(directory: Path, ttl: int = 3600) -> tuple[Path, str]:
    """Write a fresh P-256 public key to `directory`; return its path and a token it verifies."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    path = directory / "jwt-ceiling-public.pem"
    path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(uuid.uuid4()),
            "sid": str(uuid.uuid4()),
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        },
        private_key,
        algorithm="ES256",
        headers={"kid": KID, "typ": "at+jwt"},
    )
    return path, token
