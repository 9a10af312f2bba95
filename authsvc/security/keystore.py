"""Signing keys at rest: sealed with JWT_KEY_ENCRYPTION_KEY in the database, or secret files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .jwt import KeyError_, private_key_pem


def _kek_cipher(encryption_key: str) -> AESGCM:
    return AESGCM(
        hashlib.sha256(b"authsvc signing-key encryption " + encryption_key.encode()).digest()
    )


def seal_private_key(encryption_key: str, kid: str, private_key: Any) -> bytes:
    """Encrypt a private key for storage (AES-GCM under JWT_KEY_ENCRYPTION_KEY, bound to kid)."""
    nonce = os.urandom(12)
    return nonce + _kek_cipher(encryption_key).encrypt(
        nonce, private_key_pem(private_key), kid.encode()
    )


def open_private_key(encryption_key: str, kid: str, sealed: bytes) -> Any:
    try:
        pem = _kek_cipher(encryption_key).decrypt(sealed[:12], sealed[12:], kid.encode())
    except (InvalidTag, ValueError):
        raise KeyError_(
            f"cannot decrypt signing key {kid}: JWT_KEY_ENCRYPTION_KEY is not the one it was "
            "stored with"
        ) from None
    return serialization.load_pem_private_key(pem, password=None)


def write_secret_file(path: Path, content: bytes) -> bytes:
    """Create `path` (mode 0600) with `content` unless it exists; return what it holds.

    Several workers may start at once: the content goes to a temporary file that is linked
    into place, so exactly one writer wins and everyone reads that one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.write(fd, content)
            os.close(fd)
            os.chmod(tmp, 0o600)
            # If another worker won the race, its file stands and is the one read below.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_bytes()
