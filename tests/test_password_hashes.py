"""Passwords.needs_rehash: a hash made under other argon2 parameters, or none at all, needs one."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type

from authsvc.security.passwords import Passwords

CURRENT = {"memory_cost": 64, "time_cost": 2, "parallelism": 1}


def made_with(**changes: object) -> str:
    params = {**CURRENT, "hash_len": 32, "salt_len": 16, "type": Type.ID, **changes}
    return PasswordHasher(**params).hash("some password")


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


def test_what_is_not_a_current_argon2id_hash_needs_one(passwords):
    good = made_with()
    for candidate in [good.replace("v=19", "v=16"), "", "$argon2id$", "not a hash at all"]:
        assert passwords.needs_rehash(candidate), candidate
