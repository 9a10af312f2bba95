"""Passwords.needs_rehash: its string check answers exactly as argon2-cffi's parser would."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError

from authsvc.security.passwords import Passwords

CURRENT = {"memory_cost": 64, "time_cost": 2, "parallelism": 1}


def made_with(**changes: object) -> str:
    params = {**CURRENT, "hash_len": 32, "salt_len": 16, "type": Type.ID, **changes}
    return PasswordHasher(**params).hash("some password")


def reference(hasher: PasswordHasher, password_hash: str) -> bool:
    try:
        return hasher.check_needs_rehash(password_hash)
    except InvalidHashError:  # as Passwords.needs_rehash answers it
        return True


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(**CURRENT)


def test_a_hash_under_the_current_parameters_needs_none(passwords):
    assert not passwords.needs_rehash(made_with())
    assert not passwords.needs_rehash(passwords.hash("another password"))


@pytest.mark.parametrize(
    "changes",
    [
        {"memory_cost": 128},
        {"memory_cost": 640},  # the current value's digits, and more
        {"time_cost": 1},
        {"time_cost": 20},
        {"parallelism": 2},
        {"salt_len": 17},
        {"salt_len": 32},
        {"hash_len": 31},
        {"hash_len": 64},
        {"type": Type.I},
        {"type": Type.D},
    ],
)
def test_any_other_parameter_needs_one(passwords, changes):
    assert passwords.needs_rehash(made_with(**changes))


def test_hashes_only_alike_on_the_surface_are_judged_by_argon2(passwords):
    good = made_with()
    head, salt, digest = good.rsplit("$", 2)
    odd = [
        good + "$",
        good + "$extra",
        f"{head}${salt}",  # no digest
        f"{head}${salt}${digest}A",  # a digest one character longer
        f"{head},keyid=abc${salt}${digest}",
        f"{head},data=abc${salt}${digest}",
        good.replace("v=19", "v=16"),
        good.upper(),
        "",
        "$argon2id$",
        "not a hash at all",
        "bcrypt$2b$12$" + "x" * 53,
    ]
    hasher = passwords._hasher
    for candidate in odd:
        assert passwords.needs_rehash(candidate) is reference(hasher, candidate), candidate
