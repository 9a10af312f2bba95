"""Growing delays after failed logins: per account, and per account from one client network.

Every login attempt is weighed against three entries, all keyed by a hash of the normalised
email (the store never holds an address) and the client's network (an IPv4 address, an IPv6
/64 by default: api/auth.py `network_of`):

- *pair* (account, network): the attacker's own lane. `free_attempts` failures, then a wait that
  doubles from 1 s up to `max_delay` (15 min by default) before the next try.
- *account* (all IPs): twice as many free failures, then a wait doubling up to
  3600 / `account_hourly` seconds (36 s by default). However many addresses an attacker
  spreads over, at most about `account_hourly` guesses an hour reach the password check, and
  a stranger can hold the owner back by that much at most.
- *known* (account, network): set by a successful login and kept 30 days. A known network
  skips the account entry (its own pair entry still applies), so a distributed attack on an
  account does not keep its owner out even while it lasts.

A failure counts whether or not the account exists (a 429 says nothing about that). A
successful login clears its pair entry and marks its network known, and leaves the account
entry to decay by itself, so an owner signing in often hands no attacker free guesses. In the
delay phase each attempt reserves its turn atomically: parallel requests cannot all slip
through one opening. Entries are forgotten an hour after their last wait ends. Time is the
caller's clock (`rt.clock()`); the stores only compare it."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..errors import RateLimited, ValidationFailed
from .accounts import normalise_email

FORGET_AFTER = 3600  # seconds after an entry's last wait ends
KNOWN_CLIENT_TTL = 30 * 24 * 3600
CLAIM_TTL = 30  # an attempt's reservation lapses if its request dies (seconds; > worker timeout)
log = logging.getLogger("authsvc.throttle")


@dataclass(frozen=True)
class ThrottlePolicy:
    free_attempts: int = 5
    max_delay: float = 900
    account_hourly: int = 100

    @property
    def account_free_attempts(self) -> int:
        return 2 * self.free_attempts

    @property
    def account_max_delay(self) -> float:
        return 3600 / self.account_hourly


def delay_after(failures: int, free: int, max_delay: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row (0 while still free)."""
    if failures < free:
        return 0.0
    return float(min(2 ** min(failures - free, 30), max_delay))


@dataclass(frozen=True)
class ThrottleKeys:
    pair: str
    account: str
    known: str


class ThrottleStore(Protocol):
    errors: tuple[type[BaseException], ...]

    def attempt(self, keys: ThrottleKeys, now: float, policy: ThrottlePolicy) -> float:
        """0 to go ahead (the turn is reserved), else the seconds to wait."""

    def failed(self, keys: ThrottleKeys, now: float, policy: ThrottlePolicy) -> None: ...

    def succeeded(self, keys: ThrottleKeys, now: float) -> None: ...

    def release(self, keys: ThrottleKeys) -> None:
        """Give back a reserved turn whose attempt ended neither way (e.g. database down)."""


@dataclass
class _Entry:
    failures: int = 0
    next_at: float = 0.0
    claimed_until: float = 0.0
    expires_at: float = 0.0


class MemoryThrottleStore:
    """This process only: right for one worker, or as the fallback while Redis is down."""

    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def _get(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def _is_known(self, key: str, now: float) -> bool:
        return self._known.get(key, 0.0) > now

    def attempt(self, keys: ThrottleKeys, now: float, policy: ThrottlePolicy) -> float:
        with self._lock:
            lanes = [(keys.pair, policy.free_attempts)]
            if not self._is_known(keys.known, now):
                lanes.append((keys.account, policy.account_free_attempts))
            wait = 0.0
            for key, free in lanes:
                entry = self._get(key, now)
                if entry is None:
                    continue
                if now < entry.next_at:
                    wait = max(wait, entry.next_at - now)
                elif entry.failures >= free and now < entry.claimed_until:
                    wait = max(wait, 1.0)  # another request holds this turn
            if wait:
                return wait
            for key, free in lanes:
                entry = self._get(key, now)
                if entry is not None and entry.failures >= free:
                    entry.claimed_until = now + CLAIM_TTL
            return 0.0

    def failed(self, keys: ThrottleKeys, now: float, policy: ThrottlePolicy) -> None:
        lanes = (
            (keys.pair, policy.free_attempts, policy.max_delay),
            (keys.account, policy.account_free_attempts, policy.account_max_delay),
        )
        with self._lock:
            for key, free, max_delay in lanes:
                entry = self._get(key, now) or _Entry()
                entry.failures += 1
                entry.next_at = now + delay_after(entry.failures, free, max_delay)
                entry.claimed_until = 0.0
                entry.expires_at = entry.next_at + FORGET_AFTER
                self._entries[key] = entry
                self._entries.move_to_end(key)
            self._prune(now)

    def succeeded(self, keys: ThrottleKeys, now: float) -> None:
        with self._lock:
            self._entries.pop(keys.pair, None)
            self._known[keys.known] = now + KNOWN_CLIENT_TTL
            self._known.move_to_end(keys.known)
            self._prune(now)

    def release(self, keys: ThrottleKeys) -> None:
        with self._lock:
            for key in (keys.pair, keys.account):
                entry = self._entries.get(key)
                if entry is not None:
                    entry.claimed_until = 0.0

    def forget(self, account: str) -> None:  # an operator's unlock: every IP's entry too
        with self._lock:
            for key in [k for k in self._entries if k.split(":ip:")[0] == account]:
                del self._entries[key]

    def _prune(self, now: float) -> None:
        # Bounded memory under a flood of made-up emails: expired first, then the oldest.
        for table in (self._entries, self._known):
            if len(table) <= self._max_entries:
                continue
            for key in [k for k, v in table.items() if _expiry(v) <= now]:
                del table[key]
            while len(table) > self._max_entries:
                table.popitem(last=False)


def _expiry(value: _Entry | float) -> float:
    return value.expires_at if isinstance(value, _Entry) else value


# KEYS: pair, account, known. ARGV: now, claim ttl, pair free, account free.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local lanes = {{KEYS[1], tonumber(ARGV[3])}}
if redis.call('EXISTS', KEYS[3]) == 0 then
  table.insert(lanes, {KEYS[2], tonumber(ARGV[4])})
end
local wait = 0
for _, lane in ipairs(lanes) do
  local s = redis.call('HMGET', lane[1], 'f', 't', 'c')
  local f, t, c = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
  if now < t then
    wait = math.max(wait, t - now)
  elseif f >= lane[2] and now < c then
    wait = math.max(wait, 1)
  end
end
if wait > 0 then
  return tostring(wait)
end
for _, lane in ipairs(lanes) do
  local f = tonumber(redis.call('HGET', lane[1], 'f')) or 0
  if f >= lane[2] then
    redis.call('HSET', lane[1], 'c', tostring(now + tonumber(ARGV[2])))
  end
end
return '0'
"""

# KEYS: pair, account. ARGV: now, forget after, pair free, pair max, account free, account max.
_FAILED = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local free, max = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local f = redis.call('HINCRBY', key, 'f', 1)
  local delay = 0
  if f >= free then
    delay = math.min(2 ^ math.min(f - free, 30), max)
  end
  redis.call('HSET', key, 't', tostring(now + delay), 'c', '0')
  redis.call('EXPIRE', key, math.ceil(delay + tonumber(ARGV[2])))
end
return 1
"""

# KEYS: pair, account.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'c', '0')
  end
end
return 1
"""


class RedisThrottleStore:
    """Shared by every worker and instance that uses the same Redis (and key prefix).

    Each operation is one Lua script, so it is atomic across processes. The three keys of an
    attempt share a hash tag, so this also works on Redis Cluster.
    """

    def __init__(self, client: Any) -> None:
        from redis.exceptions import RedisError

        self.errors = (RedisError,)
        self._client = client
        self._attempt = client.register_script(_ATTEMPT)
        self._failed = client.register_script(_FAILED)
        self._release = client.register_script(_RELEASE)

    def attempt(self, keys: ThrottleKeys, now: float, policy: ThrottlePolicy) -> float:
        args = [repr(now), CLAIM_TTL, policy.free_attempts, policy.account_free_attempts]
        result = self._attempt(keys=[keys.pair, keys.account, keys.known], args=args)
        return float(result)

    def failed(self, keys: ThrottleKeys, now: float, policy: ThrottlePolicy) -> None:
        args = [
            repr(now),
            FORGET_AFTER,
            policy.free_attempts,
            policy.max_delay,
            policy.account_free_attempts,
            policy.account_max_delay,
        ]
        self._failed(keys=[keys.pair, keys.account], args=args)

    def succeeded(self, keys: ThrottleKeys, now: float) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(keys.pair)
        pipe.set(keys.known, 1, ex=KNOWN_CLIENT_TTL)
        pipe.execute()

    def release(self, keys: ThrottleKeys) -> None:
        self._release(keys=[keys.pair, keys.account], args=[])

    def forget(self, account: str) -> None:  # known clients stay known
        self._client.delete(account, *self._client.scan_iter(match=f"{account}:ip:*"))


def account_fingerprint(email: str) -> str:
    """The account's throttle identity: its normalised email, hashed (unknown ones alike)."""
    try:
        identity = normalise_email(email)
    except ValidationFailed:
        identity = email.strip().lower()
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginThrottle:
    """The policy applied to one store; falls back to process memory if the store fails."""

    def __init__(self, store: ThrottleStore, policy: ThrottlePolicy, prefix: str) -> None:
        self.store = store
        self.policy = policy
        self.prefix = prefix
        self._fallback = MemoryThrottleStore()
        self._warned_at = 0.0

    def keys(self, email: str, network: str | None) -> ThrottleKeys:
        # The {…} hash tag keeps an account's keys in one Redis Cluster slot.
        base = f"{self.prefix}:login:{{{account_fingerprint(email)}}}"
        client = network or "unknown"
        return ThrottleKeys(
            pair=f"{base}:ip:{client}", account=base, known=f"{base}:known:{client}"
        )

    def _call(self, operation: str, *args: Any) -> Any:
        try:
            return getattr(self.store, operation)(*args)
        except self.store.errors as exc:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning(
                    "rate-limit storage unreachable (%s); login throttling uses this "
                    "process's memory until it is back",
                    type(exc).__name__,
                )
            return getattr(self._fallback, operation)(*args)

    def check(self, keys: ThrottleKeys, now: datetime) -> None:
        """Reserve this attempt's turn, or raise RateLimited with the seconds to wait."""
        wait = self._call("attempt", keys, now.timestamp(), self.policy)
        if wait > 0:
            raise RateLimited(
                math.ceil(wait), "too many failed logins for this account; try again later"
            )

    def failed(self, keys: ThrottleKeys, now: datetime) -> None:
        self._call("failed", keys, now.timestamp(), self.policy)

    def succeeded(self, keys: ThrottleKeys, now: datetime) -> None:
        self._call("succeeded", keys, now.timestamp())

    def release(self, keys: ThrottleKeys) -> None:
        self._call("release", keys)

    def unlock(self, email: str) -> None:  # an operator's: failures from every IP forgotten
        self._call("forget", self.keys(email, None).account)
        self._fallback.forget(self.keys(email, None).account)
