"""Access tokens (the only PyJWT importer): signing keys, kid, issuing, verifying, JWKS."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ..errors import InvalidToken, TokenExpired

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
DEV_KEY_MARKER = b"# authsvc development key: generated locally, never use in production\n"
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]
# Verified access tokens remembered per worker (a few MB at most).
VERIFIED_CACHE_SIZE = 4096


# The order of P-256 (SEC 2): an ECDSA signature (r, s) also verifies as (r, n - s).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class LowSES256(ECAlgorithm):
    """ES256 with one spelling per signature (as Bitcoin's BIP 62 and libsecp256k1 do): it
    signs with s <= n/2 and refuses a signature whose s is above, so that no one can re-spell
    a token (same claims, same jti) by replacing s with n - s."""

    def __init__(self) -> None:
        super().__init__(ECAlgorithm.SHA256, ec.SECP256R1)

    def sign(self, msg: bytes, key: Any) -> bytes:
        signature = super().sign(msg, key)  # JWS form: r and s, 32 bytes each
        r, s = signature[:32], int.from_bytes(signature[32:], "big")
        if s > P256_ORDER // 2:
            s = P256_ORDER - s
        return r + s.to_bytes(32, "big")

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if len(sig) != 64 or int.from_bytes(sig[32:], "big") > P256_ORDER // 2:
            return False
        return super().verify(msg, key, sig)


def _use_low_s_es256() -> None:
    """PyJWT's registry holds one handler per alg name; ES256's is ours (this module is the
    only PyJWT user, so jwt.encode and jwt.decode everywhere in authsvc use it)."""
    if not isinstance(jwt.get_algorithm_by_name("ES256"), LowSES256):
        jwt.unregister_algorithm("ES256")
        jwt.register_algorithm("ES256", LowSES256())


_use_low_s_es256()


class KeyError_(ValueError):
    """A signing key cannot be loaded or does not fit the configuration."""


class UnknownSigningKey(InvalidToken):
    """The token names a kid this key set does not hold (maybe one published since)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def algorithm_for(private_key: Any) -> str:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise KeyError_("only P-256 EC keys are supported (ES256)")
        return "ES256"
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise KeyError_("RSA keys must be at least 2048 bits")
        return "RS256"
    raise KeyError_(f"unsupported key type {type(private_key).__name__}")


def generate_private_key(algorithm: str) -> Any:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise KeyError_(f"cannot generate a key for {algorithm}")


def private_key_pem(private_key: Any) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_jwk(public_key: Any) -> dict[str, str]:
    """The public key as a JWK (members only, without kid/alg/use)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return OKPAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public_key, as_dict=True)
    raise KeyError_(f"unsupported key type {type(public_key).__name__}")


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint: the kid of an asymmetric key."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
        "RSA": ("e", "kty", "n"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    signing_key: Any = field(repr=False)  # private key object, HS256 secret bytes, or None
    verifying_key: Any = field(repr=False)  # public key object, or the HS256 secret bytes
    development: bool = False

    @classmethod
    def from_private_key(cls, private_key: Any, *, development: bool = False) -> SigningKey:
        public_key = private_key.public_key()
        return cls(
            kid=jwk_thumbprint(public_jwk(public_key)),
            alg=algorithm_for(private_key),
            signing_key=private_key,
            verifying_key=public_key,
            development=development,
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        try:
            private_key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyError_("not an unencrypted PEM private key") from exc
        return cls.from_private_key(private_key, development=DEV_KEY_MARKER.strip() in pem)

    @classmethod
    def from_secret(cls, secret: str) -> SigningKey:
        raw = secret.encode()
        kid = "hs256-" + _b64url(hashlib.sha256(b"authsvc kid " + raw).digest())[:16]
        return cls(kid=kid, alg="HS256", signing_key=raw, verifying_key=raw)

    @classmethod
    def from_public_jwk(cls, kid: str, alg: str, jwk: dict[str, str]) -> SigningKey:
        """A verify-only key (no private part), as published in a JWKS."""
        algorithm = {"ES256": ECAlgorithm, "EdDSA": OKPAlgorithm, "RS256": RSAAlgorithm}[alg]
        public_key = algorithm.from_jwk(json.dumps(jwk))
        return cls(kid=kid, alg=alg, signing_key=None, verifying_key=public_key)

    def jwk(self) -> dict[str, str] | None:
        """Public JWK for the JWKS document; None for a shared secret."""
        if self.alg == "HS256":
            return None
        return {**public_jwk(self.verifying_key), "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    raw: dict[str, Any]


class KeySet:
    """Signs with one key; verifies with any published one, the algorithm pinned per key."""

    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        issuer: str,
        audience: str,
        leeway: int,
        access_ttl: int,
        signer: SigningKey | None = None,
        jwks_max_age: int = 300,
    ) -> None:
        if not keys and signer is None:
            raise KeyError_("no signing key")
        self.keys = list(keys)
        self.signer = signer if signer is not None else self.keys[0]
        if self.signer.kid not in {key.kid for key in self.keys}:
            self.keys.insert(0, self.signer)
        self.by_kid = {key.kid: key for key in self.keys}
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.access_ttl = access_ttl
        self.jwks_max_age = jwks_max_age
        self._jwks = {"keys": [jwk for key in self.keys if (jwk := key.jwk()) is not None]}
        self._verified = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(
            self._verify_signature_and_claims
        )
        self._headers = {"kid": self.signer.kid, "typ": ACCESS_TOKEN_TYP}

    @property
    def current(self) -> SigningKey:
        return self.signer

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._jwks

    def issue_access_token(
        self, sub: str, sid: str, now: datetime, **extra: Any
    ) -> tuple[str, int]:
        """A signed access token for user `sub` in session `sid`, and its lifetime in seconds."""
        iat = int(now.timestamp())
        key = self.signer
        payload = {
            **extra,  # claims the caller adds (email_verified); the registered ones win
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "sid": sid,
            "iat": iat,
            "exp": iat + self.access_ttl,
            "jti": secrets.token_hex(16),  # 128 random bits, without a UUID object
        }
        if key.signing_key is None:
            raise KeyError_(f"signing key {key.kid} has no private part")
        token = jwt.encode(payload, key.signing_key, algorithm=key.alg, headers=self._headers)
        return token, self.access_ttl

    def verify_access_token(self, token: str, now: datetime) -> AccessClaims:
        """Verify signature, typ, iss, aud and exp (with leeway); raise InvalidToken otherwise."""
        if len(token) > 4096 or "=" in token:
            # Base64url without padding (RFC 7515 §2): "=" would be a second spelling.
            raise InvalidToken("malformed access token")
        claims = self._verified(token)
        ts = now.timestamp()
        if ts > claims.exp + self.leeway:
            raise TokenExpired("access token expired")
        if claims.iat > ts + self.leeway:
            raise InvalidToken("access token issued in the future")
        return claims

    def _verify_signature_and_claims(self, token: str) -> AccessClaims:
        """Everything about a token that does not depend on the time. A client presents the
        same access token many times, so the results are cached per key set (see __init__);
        failures are not cached, and a new key set (a rotation, a revoked key) starts empty."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed access token") from None
        key = self.by_kid.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
        if key is None:
            raise UnknownSigningKey("unknown signing key")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in (ACCESS_TOKEN_TYP, "application/at+jwt"):
            raise InvalidToken("not an access token")
        try:
            claims = jwt.decode(
                token,
                key.verifying_key,
                algorithms=[key.alg],  # pinned per key: no "none", no algorithm confusion
                audience=self.audience,
                issuer=self.issuer,
                # Time is checked against the app's clock, not PyJWT's.
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError:
            raise InvalidToken("invalid access token") from None
        exp, iat = claims.get("exp"), claims.get("iat")
        sub, sid, jti = claims.get("sub"), claims.get("sid"), claims.get("jti")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
            raise InvalidToken("invalid access token")
        if not all(isinstance(v, str) for v in (sub, sid, jti)):
            raise InvalidToken("invalid access token")
        return AccessClaims(sub=sub, sid=sid, jti=jti, iat=iat, exp=exp, raw=claims)


def load_key_file(path: str | Path) -> SigningKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read signing key {path}: {exc.strerror}") from None
    return SigningKey.from_pem(pem)


def static_keyset(settings: Any) -> KeySet | None:
    """The key set fixed by the settings (HS256 secret or PEM files), or None when the keys
    live in the database (the default; see services/keys.py)."""
    from ..config import ConfigError

    if settings.JWT_ALGORITHM == "HS256":
        keys = [SigningKey.from_secret(settings.JWT_SECRET)]
    elif settings.JWT_PRIVATE_KEY_FILE:
        paths = [p.strip() for p in settings.JWT_PRIVATE_KEY_FILE.split(",") if p.strip()]
        try:
            keys = [load_key_file(p) for p in paths]
        except KeyError_ as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None
        if keys[0].alg != settings.JWT_ALGORITHM:
            raise ConfigError(
                f"invalid configuration: the signing key (first in JWT_PRIVATE_KEY_FILE) is "
                f"{keys[0].alg}, but JWT_ALGORITHM is {settings.JWT_ALGORITHM}"
            )
        if settings.is_production and any(key.development for key in keys):
            raise ConfigError(
                "invalid configuration: JWT_PRIVATE_KEY_FILE names a development key; "
                "production needs a real one (flask --app wsgi keys generate)"
            )
    else:
        return None
    return KeySet(
        keys,
        issuer=settings.JWT_ISSUER,
        audience=settings.JWT_AUDIENCE,
        leeway=settings.JWT_LEEWAY,
        access_ttl=settings.ACCESS_TOKEN_TTL,
    )
