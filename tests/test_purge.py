"""`flask purge-tokens`: dry run deletes nothing, a real run deletes exactly what has been dead
past the retention, in batches; spent tokens reuse detection still needs are kept, and a
purged spent token never works again."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, update

from authsvc.models import (
    AuthSession,
    EmailToken,
    PasswordResetToken,
    RefreshToken,
    SecurityEvent,
    User,
)
from authsvc.security.tokens import hash_token
from authsvc.services.maintenance import purge
from conftest import PASSWORD

DAY = 24 * 3600
TABLES = {
    "refresh_tokens": RefreshToken,
    "sessions": AuthSession,
    "password_reset_tokens": PasswordResetToken,
    "email_tokens": EmailToken,
    "security_events": SecurityEvent,
}


def _counts(engine):
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(model)).scalar_one()
            for name, model in TABLES.items()
        }


def _run(app, *args):
    result = app.test_cli_runner().invoke(args=["purge-tokens", *args])
    assert result.exit_code == 0, result.output
    counts = {
        table: int(number)
        for number, table in re.findall(r"(?:would delete|deleted)\s+(\d+) (\w+)", result.output)
    }
    assert set(counts) == set(TABLES), result.output
    return counts, result.output


def _login(client):
    response = client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _refresh(client, token):
    return client.post("/api/auth/refresh", json={"refresh_token": token})


def _token_exists(engine, raw):
    with engine.connect() as conn:
        return (
            conn.execute(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.token_hash == hash_token(raw))
            ).scalar_one()
            == 1
        )


def _session_revoked_at(engine, raw):
    with engine.connect() as conn:
        return conn.execute(
            select(AuthSession.revoked_at)
            .join(RefreshToken, RefreshToken.session_id == AuthSession.id)
            .where(RefreshToken.token_hash == hash_token(raw))
        ).scalar_one()


def _add_reset_tokens(engine, user_id, now):
    """Reset tokens in each state (the reset flow itself belongs to the accounts feature)."""
    rows = [  # (created, expires, used) relative to now, in days
        (-10, -10 + 1 / 48, None),  # expired long ago -> purged
        (-10, -10 + 1 / 48, -10),  # used long ago -> purged
        (-(1 / 96), 1 / 96, None),  # live -> kept
        (-(1 / 96), 1 / 96, -(1 / 200)),  # used just now -> kept for the retention
    ]
    with engine.begin() as conn:
        for created, expires, used in rows:
            conn.execute(
                insert(PasswordResetToken).values(
                    user_id=user_id,
                    token_hash=uuid.uuid4().hex * 2,
                    created_at=now + timedelta(days=created),
                    expires_at=now + timedelta(days=expires),
                    used_at=None if used is None else now + timedelta(days=used),
                )
            )


def test_purge_deletes_what_is_dead_past_retention_and_keeps_what_reuse_detection_needs(
    app, client, user, clock, engine
):
    # Day 0: three more devices. One logs out at once, one is never used again.
    logged_out, _abandoned, live = _login(client), _login(client), _login(client)
    assert _refresh(client, logged_out["refresh_token"]).status_code == 200  # a chain of 2
    client.post("/api/auth/logout", json={"refresh_token": logged_out["refresh_token"]})

    # Day 6: `live` rotates twice; its first token expires on day 7, the second on day 13.
    clock.advance(6 * DAY)
    first_spent = live["refresh_token"]
    second = _refresh(client, first_spent).get_json()
    clock.advance(60)
    second_spent = second["refresh_token"]
    current = _refresh(client, second_spent).get_json()

    # Day 9: one more device logs in and out (revoked within the retention: kept).
    clock.advance(3 * DAY)
    recent = _login(client)
    client.post("/api/auth/logout", json={"refresh_token": recent["refresh_token"]})
    user_id = uuid.UUID(user["user"]["id"])
    _add_reset_tokens(engine, user_id, clock())
    with engine.begin() as conn:  # an old event, past the events retention
        conn.execute(
            insert(SecurityEvent).values(
                user_id=user_id, type="login_failed", created_at=clock() - timedelta(days=100)
            )
        )

    before = _counts(engine)
    # Retention 1 day: the cut-off is day 8. Events: 90 days.
    expected = {
        # user's first token and abandoned's (expired day 7); logged_out's 2 (revoked day 0);
        # live's first token (expired day 7, spent) -> 5; live keeps 2, recent keeps 1.
        "refresh_tokens": 5,
        "sessions": 3,  # user's first (ended day 7), abandoned (day 7), logged_out (day 0)
        "password_reset_tokens": 2,
        "email_tokens": 1,  # the verification link mailed on registration (expired day 2)
        "security_events": 1,
    }
    counts, output = _run(app, "--dry-run", "--retention", "1d")
    assert counts == expected
    assert "would delete" in output
    assert _counts(engine) == before  # a dry run deletes nothing

    counts, output = _run(app, "--retention", "1d", "--events-retention", "90d")
    assert counts == expected
    assert _counts(engine) == {name: before[name] - expected[name] for name in TABLES}
    assert "batches" in output

    # The live session keeps its spent token still within its expiry...
    assert not _token_exists(engine, first_spent)
    assert _token_exists(engine, second_spent)
    assert _token_exists(engine, current["refresh_token"])
    # ...and a purged spent token never works: unknown, so invalid, and no new chain.
    purged = _refresh(client, first_spent)
    assert purged.status_code == 401
    assert purged.get_json()["code"] == "invalid_token"
    assert _session_revoked_at(engine, current["refresh_token"]) is None
    # The kept spent token still triggers reuse detection: the whole session ends.
    reused = _refresh(client, second_spent)
    assert reused.get_json()["code"] == "refresh_token_reused"
    assert _refresh(client, current["refresh_token"]).status_code == 401
    assert _session_revoked_at(engine, current["refresh_token"]) is not None

    # Nothing left to do: a second run deletes nothing.
    assert _run(app, "--retention", "1d")[0] == dict.fromkeys(TABLES, 0)


def test_every_purged_spent_token_stays_dead(app, client, user, clock, engine):
    """Rotate a session many times, purge with zero retention once its first tokens expired,
    then present every token ever issued: none yields a new pair."""
    issued = [user["refresh_token"]]
    for _ in range(5):
        clock.advance(DAY)
        issued.append(_refresh(client, issued[-1]).get_json()["refresh_token"])
    clock.advance(4 * DAY + 60)  # day 9: the tokens issued on days 0-2 have expired
    counts, _ = _run(app, "--retention", "0")
    assert counts["refresh_tokens"] == 3
    assert [_token_exists(engine, t) for t in issued] == [False] * 3 + [True] * 3
    for token in issued[:3]:
        response = _refresh(client, token)
        assert response.status_code == 401
        assert response.get_json()["code"] == "invalid_token"
    # The session itself is intact: its live token still rotates.
    assert _refresh(client, issued[-1]).status_code == 200


def test_revoked_tokens_of_a_live_session_are_purged(app, client, user, clock, engine):
    """A password change keeps the session but revokes its old chain; those rows go too."""
    rotated = _refresh(client, user["refresh_token"]).get_json()
    with engine.begin() as conn:
        conn.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == hash_token(user["refresh_token"]))
            .values(revoked=True, revoked_at=clock())
        )
    clock.advance(2 * DAY)
    counts, _ = _run(app, "--retention", "1d")
    assert counts == {**dict.fromkeys(TABLES, 0), "refresh_tokens": 1}
    assert not _token_exists(engine, user["refresh_token"])
    assert _refresh(client, rotated["refresh_token"]).status_code == 200


def _bulk_dead_rows(engine, user_id, now, sessions, tokens_per_session, events):
    """Sessions ended long ago with their tokens, and old events: set-based inserts."""
    old = now - timedelta(days=200)
    session_rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "created_at": old,
            "last_used_at": old,
            "expires_at": old + timedelta(days=7),
            "absolute_expires_at": old + timedelta(days=30),
        }
        for _ in range(sessions)
    ]
    token_rows = [
        {
            "user_id": user_id,
            "session_id": s["id"],
            "token_hash": uuid.uuid4().hex * 2,
            "created_at": old,
            "expires_at": old + timedelta(days=7),
        }
        for s in session_rows
        for _ in range(tokens_per_session)
    ]
    event_rows = [
        {"user_id": user_id, "type": "login_succeeded", "created_at": old} for _ in range(events)
    ]
    with engine.begin() as conn:
        conn.execute(insert(AuthSession), session_rows)
        conn.execute(insert(RefreshToken), token_rows)
        if event_rows:
            conn.execute(insert(SecurityEvent), event_rows)


@pytest.mark.parametrize(
    ("batch_size", "sessions", "tokens_per_session", "revoked", "events"),
    [(1, 4, 3, 2, 5), (7, 30, 10, 9, 50), (1000, 60, 40, 15, 2100)],
)
def test_batches_cover_more_rows_than_one_batch(
    app, user, engine, clock, batch_size, sessions, tokens_per_session, revoked, events
):
    user_id = uuid.UUID(user["user"]["id"])
    now = clock()
    _bulk_dead_rows(engine, user_id, now, sessions, tokens_per_session, events)
    # Sessions revoked two days ago whose tokens have not expired: they go with their sessions.
    revoked_rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "created_at": now - timedelta(days=3),
            "last_used_at": now - timedelta(days=3),
            "expires_at": now + timedelta(days=4),
            "absolute_expires_at": now + timedelta(days=27),
            "revoked_at": now - timedelta(days=2),
        }
        for _ in range(revoked)
    ]
    with engine.begin() as conn:
        conn.execute(insert(AuthSession), revoked_rows)
        conn.execute(
            insert(RefreshToken),
            [
                {
                    "user_id": user_id,
                    "session_id": row["id"],
                    "token_hash": uuid.uuid4().hex * 2,
                    "created_at": row["created_at"],
                    "expires_at": row["expires_at"],
                    "revoked": True,
                    "revoked_at": row["revoked_at"],
                }
                for row in revoked_rows
                for _ in range(3)
            ],
        )
    before = _counts(engine)
    options = {
        "retention": timedelta(days=1),
        "events_retention": timedelta(days=90),
        "batch_size": batch_size,
    }
    with app.app_context():
        from authsvc.db import get_session

        dry = purge(get_session(), app.extensions["authsvc"], dry_run=True, **options)
        report = purge(get_session(), app.extensions["authsvc"], **options)
    assert (
        report.counts
        == dry.counts
        == {
            "refresh_tokens": sessions * tokens_per_session + revoked * 3,
            "sessions": sessions + revoked,
            "password_reset_tokens": 0,
            "email_tokens": 0,
            "security_events": events,
        }
    )
    assert report.batches > sum(report.counts.values()) // batch_size
    after = _counts(engine)
    assert after == {name: before[name] - report.counts[name] for name in TABLES}
    # What is left is alice's live login (its session, its token, its event) and the live
    # verification link mailed when she registered.
    assert after == {
        "refresh_tokens": 1,
        "sessions": 1,
        "password_reset_tokens": 0,
        "email_tokens": 1,
        "security_events": 1,
    }
    with engine.connect() as conn:
        assert conn.execute(select(User.id)).scalar_one() == user_id


def test_purge_rejects_bad_options(app):
    runner = app.test_cli_runner()
    for args in (["--retention", "soon"], ["--retention", "-1d"], ["--batch-size", "0"]):
        result = runner.invoke(args=["purge-tokens", *args])
        assert result.exit_code == 2, (args, result.output)
    with pytest.raises(ValueError), app.app_context():
        from authsvc.db import get_session

        purge(get_session(), app.extensions["authsvc"], batch_size=0)


def test_cutoffs_come_from_the_apps_clock(app, clock):
    clock.advance(10 * DAY)
    _, output = _run(app, "--dry-run", "--retention", "12h", "--events-retention", "30d")
    now = datetime.now(UTC) + timedelta(days=10)
    cutoff = (now - timedelta(hours=12)).date().isoformat()
    events_cutoff = (now - timedelta(days=30)).date().isoformat()
    assert f"cut-off {cutoff}" in output
    assert f"events cut-off {events_cutoff}" in output


def test_rotation_keeps_working_while_a_purge_runs(app, client, user, engine, clock):
    """Short batches: a refresh between two of them is never refused or left waiting."""
    import threading

    _bulk_dead_rows(
        engine,
        uuid.UUID(user["user"]["id"]),
        clock(),
        sessions=100,
        tokens_per_session=30,
        events=0,
    )
    done = threading.Event()
    reports = []

    def run_purge():
        try:
            with app.app_context():
                from authsvc.db import get_session

                reports.append(purge(get_session(), app.extensions["authsvc"], batch_size=20))
        finally:
            done.set()

    worker = threading.Thread(target=run_purge)
    worker.start()
    token, rotations = user["refresh_token"], 0
    while not done.is_set() or rotations < 5:
        response = _refresh(client, token)
        assert response.status_code == 200, response.get_json()
        token = response.get_json()["refresh_token"]
        rotations += 1
    worker.join(timeout=60)
    assert reports[0].counts["refresh_tokens"] == 3000
    assert reports[0].counts["sessions"] == 100
    assert _token_exists(engine, token)


def test_expired_sessions_are_found_between_live_ones_across_batches(app, user, engine, clock):
    # expires_at has no index (rotations update sessions in place): the purge walks sessions
    # in primary-key order, batch after batch, and must skip the live ones it passes.
    user_id = uuid.UUID(user["user"]["id"])
    now = clock()
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "created_at": now - timedelta(days=20),
            "last_used_at": now - timedelta(days=10),
            "expires_at": now + (timedelta(days=3) if i % 3 == 0 else -timedelta(days=3)),
            "absolute_expires_at": now + timedelta(days=10),
        }
        for i in range(30)
    ]
    with engine.begin() as conn:
        conn.execute(insert(AuthSession), rows)
    live = {row["id"] for row in rows if row["expires_at"] > now}
    with app.app_context():
        from authsvc.db import get_session

        report = purge(
            get_session(), app.extensions["authsvc"], retention=timedelta(days=1), batch_size=4
        )
    assert report.counts["sessions"] == 30 - len(live)
    with engine.connect() as conn:
        left = set(conn.execute(select(AuthSession.id)).scalars())
    assert live <= left
    assert not ({row["id"] for row in rows} - live) & left
