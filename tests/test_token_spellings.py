"""One access token, one spelling: an ES256 signature (r, s) also verifies as (r, n - s) and
base64url may be padded with "=", so a token could be re-spelled with the same jti. authsvc
signs only low-S signatures and refuses every other spelling, on /me and on introspection."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from test_introspection import introspect, service_client

from authsvc.security.jwt import KeySet, SigningKey, generate_private_key
from conftest import bearer

__all__ = ["service_client"]  # the fixture, imported for pytest

# The order n of the P-256 group (SEC 2, "secp256r1").
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def high_s_spelling(token: str) -> str:
    """The same token with its signature's s replaced by n - s (still a valid ECDSA pair)."""
    header, claims, signature = token.split(".")
    raw = _b64decode(signature)
    assert len(raw) == 64
    s = int.from_bytes(raw[32:], "big")
    return f"{header}.{claims}.{_b64encode(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def padded_spelling(token: str) -> str:
    header, claims, signature = token.split(".")
    return f"{header}.{claims}.{signature}{'=' * (-len(signature) % 4)}"


def test_the_signer_emits_low_s_and_the_other_spelling_is_valid_ecdsa(user, app):
    token = user["access_token"]
    signature = _b64decode(token.split(".")[2])
    assert int.from_bytes(signature[32:], "big") <= P256_ORDER // 2
    # (r, n - s) is a signature any ECDSA verifier accepts: the refusal below is ours.
    jwks = app.test_client().get("/.well-known/jwks.json").get_json()
    key = jwcrypto_jwk.JWK(**jwks["keys"][0])
    for spelling in (token, high_s_spelling(token)):
        verifier = jwcrypto_jws.JWS()
        verifier.deserialize(spelling)
        verifier.verify(key)


@pytest.mark.parametrize("respell", [high_s_spelling, padded_spelling])
def test_a_respelled_token_is_refused_on_me(client, user, respell):
    assert client.get("/api/auth/me", headers=bearer(user["access_token"])).status_code == 200
    other = respell(user["access_token"])
    assert other != user["access_token"]
    response = client.get("/api/auth/me", headers=bearer(other))
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_token"


@pytest.mark.parametrize("respell", [high_s_spelling, padded_spelling])
def test_a_respelled_token_is_inactive_on_introspection(client, user, service_client, respell):
    assert introspect(client, user["access_token"], service_client).get_json()["active"]
    other = respell(user["access_token"])
    assert introspect(client, other, service_client).get_json() == {"active": False}


def test_a_thousand_issued_tokens_all_verify():
    """Half of raw ECDSA signatures are high-S: the signer must fold every one of them."""
    keys = KeySet(
        [SigningKey.from_private_key(generate_private_key("ES256"))],
        issuer="authsvc",
        audience="authsvc",
        leeway=10,
        access_ttl=1800,
    )
    now = datetime.now(UTC)
    tokens = [keys.issue_access_token(f"user-{i}", f"sid-{i}", now)[0] for i in range(1000)]
    claims = [keys.verify_access_token(token, now) for token in tokens]
    assert [c.sub for c in claims] == [f"user-{i}" for i in range(1000)]
    assert len({c.jti for c in claims}) == 1000
