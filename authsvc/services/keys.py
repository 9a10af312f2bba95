"""Signing keys kept in the database: every worker and instance sees the same key set.

A key's state follows from its timestamps and the clock, so no job has to flip it:
  pending   created, published in the JWKS, not yet signing (activates_at in the future);
  active    the newest key whose activates_at has passed: it signs new tokens;
  retired   replaced by a newer active key, still published until every token it signed
            has expired (successor's activation + ACCESS_TOKEN_TTL + JWT_LEEWAY);
  expired   no longer published;  revoked: withdrawn by an operator, refused at once.
Rotation publishes the new key JWT_KEY_PREPUBLISH seconds before it signs, longer than
workers take to reload (JWT_KEYS_RELOAD_INTERVAL) and clients cache the JWKS.

Besides that full reload, each worker asks the database at most once a second (on the next
request that needs a key) for the key set's version: one tiny aggregate row that changes
when a key is added, revoked or deleted. A changed version reloads at once, so a revocation
reaches every worker of every instance within VERSION_CHECK_INTERVAL (plus a request).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..config import ConfigError, Settings
from ..db import transaction
from ..errors import NotFound, ServiceUnavailable
from ..models import SigningKeyRecord
from ..runtime import Clock
from ..security.jwt import (
    AccessClaims,
    KeyError_,
    KeySet,
    SigningKey,
    UnknownSigningKey,
    generate_private_key,
    public_jwk,
)
from ..security.keystore import open_private_key, seal_private_key, write_secret_file
from .key_states import KeyState, key_states

log = logging.getLogger("authsvc.keys")

# How often a token with an unknown kid may trigger an early reload (per worker).
_MISS_RELOAD_INTERVAL = 1.0
# How often each worker compares the database's key-set version with its own (seconds).
VERSION_CHECK_INTERVAL = 1.0
_KEY_SET_VERSION = select(
    func.count(),
    func.count(SigningKeyRecord.revoked_at),
    func.max(SigningKeyRecord.created_at),
    func.max(SigningKeyRecord.revoked_at),
)


def key_encryption_key(settings: Settings) -> str:
    """JWT_KEY_ENCRYPTION_KEY, or in development one generated once under instance/keys/."""
    if settings.JWT_KEY_ENCRYPTION_KEY:
        return settings.JWT_KEY_ENCRYPTION_KEY
    if settings.is_production:
        raise ConfigError("invalid configuration: JWT_KEY_ENCRYPTION_KEY must be set in production")
    path = Path(settings.INSTANCE_PATH) / "keys" / "dev-key-encryption-key"
    return write_secret_file(path, base64.urlsafe_b64encode(os.urandom(32))).decode().strip()


def key_set_version(engine: Engine) -> tuple[Any, ...]:
    """What changes whenever a key is added, revoked or deleted: cheap to ask every second."""
    with engine.connect() as conn:
        return tuple(conn.execute(_KEY_SET_VERSION).one())


def _load_records(engine: Engine) -> list[SigningKeyRecord]:
    with Session(engine, expire_on_commit=False) as db:
        records = list(db.scalars(select(SigningKeyRecord)))
        db.expunge_all()
        return records


def create_key(
    db: Session,
    settings: Settings,
    now: datetime,
    *,
    algorithm: str | None = None,
    prepublish: int | None = None,
    development: bool = False,
) -> SigningKeyRecord:
    """Generate a key and store it (private part encrypted). The caller commits."""
    algorithm = algorithm or settings.JWT_ALGORITHM
    if algorithm == "HS256":
        raise ConfigError("HS256 uses JWT_SECRET; there are no keys to rotate")
    private_key = generate_private_key(algorithm)
    key = SigningKey.from_private_key(private_key, development=development)
    delay = settings.JWT_KEY_PREPUBLISH if prepublish is None else prepublish
    record = SigningKeyRecord(
        kid=key.kid,
        alg=key.alg,
        public_jwk=public_jwk(private_key.public_key()),
        private_key_sealed=seal_private_key(key_encryption_key(settings), key.kid, private_key),
        created_at=now,
        activates_at=now + timedelta(seconds=delay),
        development=development,
    )
    db.add(record)
    return record


def rotate_key(
    db: Session,
    settings: Settings,
    now: datetime,
    *,
    algorithm: str | None = None,
    prepublish: int | None = None,
) -> SigningKeyRecord:
    """Add a new signing key: published now, signing after the pre-publication time.

    The very first key signs at once: nothing is signing yet, so there is nothing to wait for.
    """
    with transaction(db):
        has_keys = db.scalar(
            select(SigningKeyRecord.kid).where(SigningKeyRecord.revoked_at.is_(None)).limit(1)
        )
        record = create_key(
            db, settings, now, algorithm=algorithm, prepublish=prepublish if has_keys else 0
        )
    log.info(
        "signing key %s (%s) created; signs from %s",
        record.kid,
        record.alg,
        record.activates_at.isoformat(),
    )
    return record


def revoke_key(db: Session, kid: str, now: datetime) -> None:
    """Withdraw a key at once (e.g. it leaked): tokens it signed stop verifying."""
    with transaction(db):
        result = db.execute(
            update(SigningKeyRecord)
            .where(SigningKeyRecord.kid == kid, SigningKeyRecord.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if result.rowcount != 1:
            raise NotFound(f"no unrevoked key {kid}")
    log.warning("signing key %s revoked", kid)


def list_keys(engine: Engine, settings: Settings, now: datetime) -> list[KeyState]:
    return key_states(_load_records(engine), settings, now)


class KeyRing:
    """The database's key set, as each worker sees it: reloaded every
    JWT_KEYS_RELOAD_INTERVAL seconds, when the key-set version changes (checked at most
    every VERSION_CHECK_INTERVAL), and early (at most once a second) when a token names a
    kid it does not know yet. A reload that fails keeps the keys it had."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._records: list[SigningKeyRecord] = []
        self._loaded_at = float("-inf")
        self._last_miss = float("-inf")
        self._keyset: KeySet | None = None
        self._valid_until: datetime | None = None
        self._private: dict[str, Any] = {}
        self._records_loaded = False
        self._shape: tuple[tuple[str, bool], ...] = ()
        self._version: tuple[Any, ...] | None = None
        self._checked_at = float("-inf")
        self._checking = threading.Lock()

    # The three operations services use, as on a static KeySet.
    def issue_access_token(
        self, sub: str, sid: str, now: datetime, **extra: Any
    ) -> tuple[str, int]:
        return self.keyset(now).issue_access_token(sub, sid, now, **extra)

    def verify_access_token(self, token: str, now: datetime) -> AccessClaims:
        try:
            return self.keyset(now).verify_access_token(token, now)
        except UnknownSigningKey:
            if time.monotonic() - self._last_miss < _MISS_RELOAD_INTERVAL:
                raise
            self._last_miss = time.monotonic()
            self._reload(force=True)
            return self.keyset(now).verify_access_token(token, now)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self.keyset(self._clock()).jwks()

    @property
    def jwks_max_age(self) -> int:
        s = self._settings
        # A cached JWKS must be refetched before a pre-published key starts signing.
        return max(0, min(300, (s.JWT_KEY_PREPUBLISH - s.JWT_KEYS_RELOAD_INTERVAL) // 2))

    def keyset(self, now: datetime) -> KeySet:
        elapsed = time.monotonic() - self._loaded_at
        if elapsed >= self._settings.JWT_KEYS_RELOAD_INTERVAL:
            self._reload()
        elif time.monotonic() - self._checked_at >= VERSION_CHECK_INTERVAL:
            self._check_version()
        if self._keyset is None or (self._valid_until is not None and now >= self._valid_until):
            with self._lock:
                self._build(now)
        if self._keyset is None:
            raise ServiceUnavailable(
                "no active signing key; an operator must run `flask --app wsgi keys rotate`"
            )
        return self._keyset

    def _check_version(self) -> None:
        # One thread asks for the whole worker; the others go on with the keys they have.
        if not self._checking.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._checked_at < VERSION_CHECK_INTERVAL:
                return
            self._checked_at = time.monotonic()
            try:
                version = key_set_version(self._engine)
            except SQLAlchemyError:
                return  # the database is away: keep the keys (the full reload will log it)
            if version != self._version:
                self._reload(force=True)
        finally:
            self._checking.release()

    def _reload(self, force: bool = False) -> None:
        with self._lock:
            if (
                not force
                and time.monotonic() - self._loaded_at < self._settings.JWT_KEYS_RELOAD_INTERVAL
            ):
                return
            try:
                version = key_set_version(self._engine)
                records = _load_records(self._engine)
                if not records and not self._settings.is_production:
                    records = self._create_development_key()
                    version = key_set_version(self._engine)
            except SQLAlchemyError as exc:
                log.warning(
                    "cannot reload signing keys (%s); keeping the current ones", type(exc).__name__
                )
                self._loaded_at = time.monotonic()
                return
            self._records = records
            self._records_loaded = True
            self._version = version
            self._loaded_at = self._checked_at = time.monotonic()
            self._build(self._clock())

    def _create_development_key(self) -> list[SigningKeyRecord]:
        with Session(self._engine, expire_on_commit=False) as db, transaction(db):
            if db.scalar(select(SigningKeyRecord.kid).limit(1)) is None:
                create_key(db, self._settings, self._clock(), prepublish=0, development=True)
                log.info("generated a development signing key (never used in production)")
        return _load_records(self._engine)

    def _build(self, now: datetime) -> None:
        s = self._settings
        states = {state.kid: state for state in key_states(self._records, s, now)}
        live, changes = [], []
        for record in self._records:
            state = states[record.kid].state
            if state == "pending":
                changes.append(record.activates_at)
            if state == "retired" and states[record.kid].published_until:
                changes.append(states[record.kid].published_until)
            if state in ("pending", "active", "retired"):
                live.append((record, state))
        self._valid_until = min(changes, default=None)
        shape = tuple((record.kid, state == "active") for record, state in live)
        if self._keyset is not None and shape == self._shape:
            return  # same keys, same signer: keep the key set and its verified-token cache
        self._shape = shape
        published, signer = [], None
        for record, state in live:
            published.append(SigningKey.from_public_jwk(record.kid, record.alg, record.public_jwk))
            if state == "active":
                signer = self._signing_key(record)
        if signer is None:
            self._keyset = None
            return
        self._keyset = KeySet(
            published,
            signer=signer,
            issuer=s.JWT_ISSUER,
            audience=s.JWT_AUDIENCE,
            leeway=s.JWT_LEEWAY,
            access_ttl=s.ACCESS_TOKEN_TTL,
            jwks_max_age=self.jwks_max_age,
        )

    def _signing_key(self, record: SigningKeyRecord) -> SigningKey:
        private_key = self._private.get(record.kid)
        if private_key is None:
            try:
                private_key = open_private_key(
                    key_encryption_key(self._settings), record.kid, record.private_key_sealed
                )
            except KeyError_ as exc:
                raise ServiceUnavailable(str(exc)) from None
            self._private[record.kid] = private_key
        return SigningKey.from_private_key(private_key, development=record.development)

    def check_startup(self, refuse_without_key: bool) -> None:
        """Load the keys now. In production, refuse to start when none can sign; a
        database that cannot be reached yet only delays loading (it recovers by itself)."""
        try:
            self._reload(force=True)
        except ServiceUnavailable as exc:  # e.g. JWT_KEY_ENCRYPTION_KEY cannot open the key
            raise ConfigError(f"invalid configuration: {exc.detail}") from None
        if not (refuse_without_key and self._settings.is_production and self._keyset is None):
            return
        if not self._records_loaded:
            log.warning("signing keys not loaded yet: the database is unreachable")
            return
        raise ConfigError(
            "invalid configuration: no signing key in the database can sign in production; "
            "run `flask --app wsgi keys rotate` first"
        )
