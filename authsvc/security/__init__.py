"""Cryptography owners: passwords (argon2), access tokens (PyJWT), opaque tokens."""
