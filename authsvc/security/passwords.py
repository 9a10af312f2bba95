"""Password hashing (the only argon2 importer) and the NIST SP 800-63B password policy."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def normalise(password: str) -> str:
    """NFKC, as SP 800-63B asks, so one password typed on two keyboards hashes the same."""
    return unicodedata.normalize("NFKC", password)


class Passwords:
    """argon2id with configured parameters; also verifies for unknown users in equal time."""

    def __init__(self, memory_cost: int, time_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so that both paths cost one argon2 run.
        self._dummy_hash = self._hasher.hash("authsvc timing equaliser")

    def hash(self, password: str) -> str:
        return self._hasher.hash(normalise(password))

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True if `password` matches; a None hash burns the same time and answers False."""
        try:
            matched = self._hasher.verify(password_hash or self._dummy_hash, normalise(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """30,000 most common passwords, from zxcvbn's maintained frequency lists."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, email: str, min_length: int, max_length: int) -> str | None:
    """Why `password` is not acceptable for the account `email`, or None if it is."""
    password = normalise(password)
    if len(password) < min_length:
        return f"must be at least {min_length} characters"
    if len(password) > max_length:
        return f"must be at most {max_length} characters"
    lowered = password.lower()
    if lowered in common_passwords():
        return "is too common; choose one that is not on a list of common passwords"
    local_part = email.rpartition("@")[0].lower()
    # Very short local parts ("a@x.io") would forbid half the alphabet; three is the floor.
    if len(local_part) >= 3 and local_part in lowered:
        return "must not contain your email address"
    return None
