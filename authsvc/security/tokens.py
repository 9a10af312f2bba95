"""Opaque tokens (refresh, password reset): generation, hashing, and sealed successors."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_BYTES = 32  # 256 random bits
MAX_TOKEN_LENGTH = 128  # anything longer is not one of ours; refuse before hashing
_SEAL_INFO = b"authsvc refresh-token successor v1"
_SEAL_AAD = b"authsvc-successor"
_NONCE_BYTES = 12


def new_token() -> str:
    """A fresh opaque token: 256 random bits, URL-safe base64 without padding (43 chars)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(raw: str) -> str:
    """What the database stores and looks up: hex SHA-256 of the token."""
    return hashlib.sha256(raw.encode()).hexdigest()


def _seal_key(raw: str) -> bytes:
    # Keyed by the token itself and domain-separated from hash_token(), so the database
    # (which holds only the hash) cannot open what this key sealed.
    return hmac.new(raw.encode(), _SEAL_INFO, hashlib.sha256).digest()


def seal_successor(raw: str, successor: str) -> bytes:
    """Encrypt `successor` so that only a holder of `raw` can recover it."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(_seal_key(raw)).encrypt(nonce, successor.encode(), _SEAL_AAD)


def open_successor(raw: str, sealed: bytes) -> str | None:
    """The successor sealed under `raw`, or None if `sealed` was not made with it."""
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    try:
        return AESGCM(_seal_key(raw)).decrypt(nonce, ciphertext, _SEAL_AAD).decode()
    except (InvalidTag, ValueError):
        return None
