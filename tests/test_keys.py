"""Signing keys in the database: rotation without logging anyone out or restarting, every
worker and instance converging on the same keys, and verification from the JWKS alone."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import jwt
import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt
from sqlalchemy import select

from authsvc.config import ConfigError
from authsvc.models import SigningKeyRecord
from conftest import PASSWORD, bearer
from examples.resource_service import create_app as create_resource_app


def header_of(token):
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def kid_of(token):
    return header_of(token)["kid"]


def published_kids(client):
    return {key["kid"] for key in client.get("/.well-known/jwks.json").get_json()["keys"]}


def run_cli(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def keyed_app(make_app, fresh_database_url):
    """On a database of its own: reloads keys every second, pre-publishes new keys for 60 s."""
    return make_app(
        DATABASE_URL=fresh_database_url, JWT_KEYS_RELOAD_INTERVAL=1, JWT_KEY_PREPUBLISH=60
    )


@pytest.fixture
def keyed_engine(keyed_app):
    return keyed_app.extensions["authsvc_db"][0]


def wait_for_reload():
    time.sleep(1.1)  # JWT_KEYS_RELOAD_INTERVAL=1: a real second, not the movable clock


def test_rotation_publishes_first_signs_later_and_logs_nobody_out(keyed_app, clock):
    client = keyed_app.test_client()
    before = client.post(
        "/api/auth/register", json={"email": "rot@example.com", "password": PASSWORD}
    ).get_json()
    old_kid = kid_of(before["access_token"])

    output = run_cli(keyed_app, "keys", "rotate")
    new_kid = output.split("key ", 1)[1].split(";")[0]
    wait_for_reload()
    assert published_kids(client) == {old_kid, new_kid}
    states = run_cli(keyed_app, "keys", "list")
    assert "pending" in states and "active" in states

    # Still inside the pre-publication time: the old key signs.
    pending = client.post(
        "/api/auth/login", json={"email": "rot@example.com", "password": PASSWORD}
    ).get_json()
    assert kid_of(pending["access_token"]) == old_kid

    clock.advance(61)
    after = client.post(
        "/api/auth/login", json={"email": "rot@example.com", "password": PASSWORD}
    ).get_json()
    assert kid_of(after["access_token"]) == new_kid
    # Both generations verify: nobody was logged out by the rotation.
    for pair in (before, after):
        assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    assert published_kids(client) == {old_kid, new_kid}
    assert "retired" in run_cli(keyed_app, "keys", "list")

    # Once every token the old key signed has expired, it leaves the JWKS.
    clock.advance(1800 + 10 + 1)
    assert published_kids(client) == {new_kid}
    assert "expired" in run_cli(keyed_app, "keys", "list")


def test_revoked_key_is_refused_at_once(keyed_app):
    client = keyed_app.test_client()
    pair = client.post(
        "/api/auth/register", json={"email": "leak@example.com", "password": PASSWORD}
    ).get_json()
    # Verified once, so the worker remembers it: revoking the key must still end it.
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    run_cli(keyed_app, "keys", "rotate", "--prepublish", "0")
    run_cli(keyed_app, "keys", "revoke", "--yes", kid_of(pair["access_token"]))
    wait_for_reload()
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    assert kid_of(pair["access_token"]) not in published_kids(client)
    fresh = client.post(
        "/api/auth/login", json={"email": "leak@example.com", "password": PASSWORD}
    ).get_json()
    assert client.get("/api/auth/me", headers=bearer(fresh["access_token"])).status_code == 200


def test_private_keys_are_stored_encrypted(keyed_app, keyed_engine):
    client = keyed_app.test_client()
    client.post("/api/auth/register", json={"email": "enc@example.com", "password": PASSWORD})
    with keyed_engine.connect() as conn:
        sealed = conn.execute(select(SigningKeyRecord.private_key_sealed)).scalars().all()
    assert sealed
    for blob in sealed:
        assert b"PRIVATE KEY" not in blob
        assert b"-----" not in blob
    for key in client.get("/.well-known/jwks.json").get_json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)


def test_jwks_cache_lifetime_fits_the_prepublication_time(make_app):
    app = make_app(JWT_KEY_PREPUBLISH=120, JWT_KEYS_RELOAD_INTERVAL=30)
    response = app.test_client().get("/.well-known/jwks.json")
    # (120 - 30) / 2: a cached JWKS is refetched well before a new key signs.
    assert response.headers["Cache-Control"] == "public, max-age=45"


def test_tokens_verify_with_two_independent_jose_libraries(client, user):
    token = user["access_token"]
    jwks = client.get("/.well-known/jwks.json").get_json()

    # PyJWT, from the JWKS document only.
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid_of(token))
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="authsvc", issuer="authsvc")
    assert claims["sub"] == user["user"]["id"]

    # jwcrypto, from the same JWKS document.
    keyset = jwcrypto_jwk.JWKSet.from_json(json.dumps(jwks))
    verified = jwcrypto_jwt.JWT(
        jwt=token,
        key=keyset,
        algs=["ES256"],
        check_claims={"iss": "authsvc", "aud": "authsvc", "exp": None},
    )
    assert json.loads(verified.claims)["sub"] == user["user"]["id"]
    assert verified.token.jose_header["typ"] == "at+jwt"


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header, claims):
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def test_rfc8725_attacks_are_refused(client, user, clock):
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    token = user["access_token"]
    header = header_of(token)
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    jwks = client.get("/.well-known/jwks.json").get_json()
    public_jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public_pem = jwt.PyJWK.from_dict(public_jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attacker_key = ec.generate_private_key(ec.SECP256R1())

    def hs256_with(secret, hdr=None, body=None):
        signing_input = _unsigned({**header, "alg": "HS256", **(hdr or {})}, body or claims)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def signed_by_attacker(hdr=None, body=None):
        return jwt.encode(
            body or claims, attacker_key, algorithm="ES256", headers={**header, **(hdr or {})}
        )

    attacks = {
        "alg none": _unsigned({**header, "alg": "none"}, claims) + ".",
        "alg None, no signature": _unsigned({**header, "alg": "None"}, claims) + ".",
        "HS256 keyed with the public PEM": hs256_with(public_pem),
        "HS256 keyed with the public JWK": hs256_with(json.dumps(public_jwk).encode()),
        "our kid, attacker's key": signed_by_attacker(),
        "foreign kid": signed_by_attacker({"kid": "attacker-key"}),
        "jku pointing elsewhere": signed_by_attacker(
            {"kid": "x", "jku": "https://attacker.example/jwks.json"}
        ),
        "embedded jwk": signed_by_attacker(
            {"jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker_key.public_key()))}
        ),
        "wrong typ": signed_by_attacker({"typ": "JWT"}),
        "tampered payload": f"{_unsigned(header, {**claims, 'sub': 'someone-else'})}."
        + token.rsplit(".", 1)[1],
        "signature stripped": token.rsplit(".", 1)[0] + ".",
    }
    for name, forged in attacks.items():
        response = client.get("/api/auth/me", headers=bearer(forged))
        assert response.status_code == 401, name
        assert response.get_json()["code"] == "invalid_token", name


def test_wrong_typ_iss_aud_and_expiry_are_refused(make_app, client, user, clock):
    other = make_app(JWT_ISSUER="another-issuer").test_client()
    assert other.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 401
    other = make_app(JWT_AUDIENCE="another-audience").test_client()
    assert other.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 401
    clock.advance(1800 + 11)
    expired = client.get("/api/auth/me", headers=bearer(user["access_token"]))
    assert expired.status_code == 401
    assert expired.get_json()["code"] == "token_expired"


def test_production_refuses_to_start_without_a_usable_key(make_app, fresh_database_url):
    kek = "k" * 40
    prod = {
        "AUTHSVC_ENV": "production",
        "JWT_KEY_ENCRYPTION_KEY": kek,
        "DATABASE_URL": fresh_database_url,
        "PUBLIC_URL": "https://auth.example.org",
    }
    with pytest.raises(ConfigError, match="keys rotate"):
        make_app(**prod)
    # A development key left in the database does not count either.
    make_app(DATABASE_URL=fresh_database_url).test_client().post(
        "/api/auth/register", json={"email": "dev@example.com", "password": PASSWORD}
    )
    with pytest.raises(ConfigError, match="keys rotate"):
        make_app(**prod)
    with pytest.raises(ConfigError, match="JWT_KEY_ENCRYPTION_KEY"):
        make_app(
            AUTHSVC_ENV="production",
            DATABASE_URL=fresh_database_url,
            PUBLIC_URL="https://auth.example.org",
        )
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        make_app(**{**prod, "JWT_KEY_ENCRYPTION_KEY": "short"})


def test_production_starts_with_a_rotated_key(make_app, fresh_database_url):
    from datetime import UTC, datetime

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from authsvc.config import load_settings
    from authsvc.services.keys import rotate_key

    prod = {
        "AUTHSVC_ENV": "production",
        "JWT_KEY_ENCRYPTION_KEY": "k" * 40,
        "DATABASE_URL": fresh_database_url,
        "PUBLIC_URL": "https://auth.example.org",
    }
    engine = create_engine(fresh_database_url)
    with Session(engine) as db:
        rotate_key(db, load_settings(prod), datetime.now(UTC))
    engine.dispose()
    client = make_app(**prod).test_client()
    response = client.post(
        "/api/auth/register", json={"email": "prod@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    # A different encryption key cannot open the stored key: the start is refused.
    with pytest.raises(ConfigError, match="JWT_KEY_ENCRYPTION_KEY is not the one"):
        make_app(**{**prod, "JWT_KEY_ENCRYPTION_KEY": "x" * 40})


def get_json(url, path, token=None):
    request = urllib.request.Request(url + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def post_json(url, path, payload):
    request = urllib.request.Request(
        url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_rotation_reaches_every_instance_and_the_example_service(live_server, keyed_app):
    app = keyed_app
    settings = {
        "JWT_KEYS_RELOAD_INTERVAL": 1,
        "JWT_KEY_PREPUBLISH": 3,
        "DATABASE_URL": app.extensions["authsvc"].settings.DATABASE_URL,
    }
    first = live_server(workers=2, threads=2, **settings)
    second = live_server(workers=2, threads=2, **settings)
    # The example's JWKS cache timing scaled down like authsvc's: 1 s life < 3 s pre-publication.
    resource = create_resource_app(first.url, jwks_lifespan=1, refetch_cooldown=1).test_client()

    before = post_json(
        first.url, "/api/auth/register", {"email": "fleet@example.com", "password": PASSWORD}
    )
    old_kid = kid_of(before["access_token"])
    assert resource.get("/hello", headers=bearer(before["access_token"])).status_code == 200

    output = run_cli(app, "keys", "rotate", "--prepublish", "3")
    new_kid = output.split("key ", 1)[1].split(";")[0]

    def signs_with_new_key(server):
        pair = post_json(
            server.url, "/api/auth/login", {"email": "fleet@example.com", "password": PASSWORD}
        )
        return kid_of(pair["access_token"]) == new_kid and pair

    assert wait_until(lambda: signs_with_new_key(first)), "first instance never switched keys"
    assert wait_until(lambda: signs_with_new_key(second)), "second instance never switched keys"
    after = signs_with_new_key(second)
    assert old_kid != new_kid

    # Every instance accepts both generations, and so does the resource service, unrestarted.
    for server in (first, second):
        for pair in (before, after):
            assert get_json(server.url, "/api/auth/me", pair["access_token"])["email"] == (
                "fleet@example.com"
            )
    for pair in (before, after):
        response = resource.get("/hello", headers=bearer(pair["access_token"]))
        assert response.status_code == 200, response.get_json()
    assert resource.get("/hello", headers=bearer("not-a-token")).status_code == 401


def test_revoke_takes_a_kid_that_starts_with_a_dash(keyed_app):
    # Thumbprints are base64url: "-" is a possible first character, and must not be
    # mistaken for an option (an unknown kid is refused as such, not as a usage error).
    result = keyed_app.test_cli_runner().invoke(args=["keys", "revoke", "--yes", "-dNoSuchKid"])
    assert result.exit_code == 1, result.output
    assert result.output == "Error: no unrevoked key -dNoSuchKid\n"
