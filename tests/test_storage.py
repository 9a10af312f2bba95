"""What the database holds: SHA-256 hashes of refresh tokens, never a raw token anywhere."""

from __future__ import annotations

import hashlib

from sqlalchemy import inspect, select, text

from authsvc.models import RefreshToken


def all_cells(engine):
    """Every value of every column of every table, as text."""
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if value is None:
                        continue
                    yield table, value.hex() if isinstance(value, bytes) else str(value)


def test_only_hashes_of_refresh_tokens_are_stored(client, user, engine, clock):
    issued = [user["refresh_token"]]
    pair = client.post("/api/auth/refresh", json={"refresh_token": issued[0]}).get_json()
    issued.append(pair["refresh_token"])
    clock.advance(3)
    retry = client.post("/api/auth/refresh", json={"refresh_token": issued[0]}).get_json()
    assert retry["refresh_token"] == issued[1]  # the grace-window retry worked…
    with engine.connect() as conn:
        stored = set(conn.execute(select(RefreshToken.token_hash)).scalars())
    assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in issued}
    # …and yet no raw token (nor the password) appears in any column of any table.
    secrets = [*issued, user["access_token"], "correct horse battery staple"]
    for table, cell in all_cells(engine):
        for secret in secrets:
            assert secret not in cell, f"a raw secret is stored in {table}"


def test_refresh_tokens_have_256_bits(user):
    import base64

    raw = user["refresh_token"]
    padded = raw + "=" * (-len(raw) % 4)
    assert len(base64.urlsafe_b64decode(padded)) >= 32
    assert set(raw) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
