"""Access tokens: claims and header of SPEC §3, verifiable by anyone holding only the JWKS."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from conftest import PASSWORD, bearer


def segments(token):
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def test_access_token_claims_and_header(client, user):
    header, claims = segments(user["access_token"])
    assert set(header) == {"alg", "typ", "kid"}
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    assert set(claims) == {"iss", "aud", "sub", "sid", "iat", "exp", "jti", "email_verified"}
    assert claims["email_verified"] is False
    assert claims["sub"] == user["user"]["id"]
    assert claims["exp"] - claims["iat"] == 1800


def test_tokens_verify_with_the_published_jwks_only(client, user):
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert "max-age" in jwks.headers["Cache-Control"]
    keys = jwt.PyJWKSet.from_dict(jwks.get_json())
    header, _ = segments(user["access_token"])
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    for jwk in jwks.get_json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)  # no private member
    claims = jwt.decode(
        user["access_token"], key.key, algorithms=["ES256"], audience="authsvc", issuer="authsvc"
    )
    assert claims["sub"] == user["user"]["id"]


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
def test_other_asymmetric_algorithms(make_app, fresh_database_url, algorithm):
    # A database without keys yet: its first key is of the configured algorithm.
    app = make_app(JWT_ALGORITHM=algorithm, DATABASE_URL=fresh_database_url)
    client = app.test_client()
    pair = client.post(
        "/api/auth/register", json={"email": "alg@example.com", "password": PASSWORD}
    ).get_json()
    header, _ = segments(pair["access_token"])
    assert header["alg"] == algorithm
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    keys = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").get_json())
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    jwt.decode(pair["access_token"], key.key, algorithms=[algorithm], audience="authsvc")


def test_hs256_option(make_app):
    secret = "s" * 40
    client = make_app(JWT_ALGORITHM="HS256", JWT_SECRET=secret).test_client()
    pair = client.post(
        "/api/auth/register", json={"email": "hs@example.com", "password": PASSWORD}
    ).get_json()
    header, _ = segments(pair["access_token"])
    assert header["alg"] == "HS256"
    assert client.get("/api/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}
    jwt.decode(pair["access_token"], secret, algorithms=["HS256"], audience="authsvc")


def test_forged_tokens_are_refused(client, user):
    header, claims = segments(user["access_token"])
    enc = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()  # noqa: E731
    body_sig = user["access_token"].split(".", 1)[1]
    attacks = {
        "alg none": f"{enc({**header, 'alg': 'none'})}.{enc(claims)}.",
        "tampered payload": f"{enc(header)}.{enc({**claims, 'sub': 'someone-else'})}."
        + user["access_token"].rsplit(".", 1)[1],
        "wrong typ": f"{enc({**header, 'typ': 'JWT'})}.{body_sig}",
        "foreign kid": f"{enc({**header, 'kid': 'not-ours'})}.{body_sig}",
        "no kid": f"{enc({k: v for k, v in header.items() if k != 'kid'})}.{body_sig}",
    }
    for name, token in attacks.items():
        response = client.get("/api/auth/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.get_json()["code"] == "invalid_token", name


def test_wrong_issuer_or_audience_is_refused(make_app, client, user):
    other = make_app(JWT_ISSUER="someone-else", JWT_AUDIENCE="another-api").test_client()
    assert other.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 401
