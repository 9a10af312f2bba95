"""Discovery for resource servers (RFC 8414): a library configured with the issuer URL finds
the keys and verifies authsvc's tokens with no glue code."""

from __future__ import annotations

import jwt
import pytest

from authsvc.config import load_settings
from conftest import PASSWORD, production_settings

PUBLIC_URL = "https://auth.example.org"
METADATA = "/.well-known/oauth-authorization-server"


def _register(client):
    response = client.post(
        "/api/auth/register", json={"email": "rs@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    return response.get_json()


def test_the_issuer_is_the_public_url_and_the_tokens_say_so(make_app):
    client = make_app(PUBLIC_URL=PUBLIC_URL + "/").test_client()
    response = client.get(METADATA, headers={"Host": "evil.example"})
    assert response.status_code == 200
    metadata = response.get_json()
    assert metadata["issuer"] == PUBLIC_URL
    assert metadata["jwks_uri"] == f"{PUBLIC_URL}/.well-known/jwks.json"
    assert metadata["introspection_endpoint"] == f"{PUBLIC_URL}/api/auth/introspect"
    assert metadata["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert "public" in response.headers["Cache-Control"]

    pair = _register(client)
    # What a resource server does: fetch the keys from jwks_uri, verify iss against issuer.
    jwks = client.get(metadata["jwks_uri"].removeprefix(PUBLIC_URL)).get_json()
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    claims = jwt.decode(
        pair["access_token"],
        key=key,
        algorithms=[key.algorithm_name],
        audience="authsvc",
        issuer=metadata["issuer"],
    )
    assert claims["iss"] == metadata["issuer"] == PUBLIC_URL


def test_an_explicit_issuer_wins(make_app):
    client = make_app(PUBLIC_URL=PUBLIC_URL, JWT_ISSUER="urn:example:auth").test_client()
    issuer = client.get(METADATA).get_json()["issuer"]
    assert issuer == "urn:example:auth"
    claims = jwt.decode(_register(client)["access_token"], options={"verify_signature": False})
    assert claims["iss"] == issuer


def test_without_a_public_url_the_issuer_stays_authsvc(client):
    metadata = client.get(METADATA).get_json()
    assert metadata["issuer"] == "authsvc"
    assert metadata["jwks_uri"] == "http://localhost/.well-known/jwks.json"


@pytest.mark.parametrize("value", ["auth.example.org", "ftp://auth.example.org", "https://x/?a=1"])
def test_a_public_url_must_be_a_url(value):
    with pytest.raises(ValueError, match="PUBLIC_URL must be an http"):
        load_settings({"PUBLIC_URL": value}, environ={}, instance_path="/nonexistent")


def test_production_wants_an_https_public_url():
    production = {
        **production_settings("postgresql://db.example.org/authsvc"),
        "JWT_ALGORITHM": "HS256",
        "JWT_SECRET": "s" * 32,
    }
    for public_url in ("", "http://auth.example.org"):
        with pytest.raises(ValueError, match="PUBLIC_URL must be set in production"):
            load_settings({**production, "PUBLIC_URL": public_url}, environ={}, instance_path="/x")
    settings = load_settings({**production, "PUBLIC_URL": PUBLIC_URL}, environ={})
    assert settings.JWT_ISSUER == PUBLIC_URL
