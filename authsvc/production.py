"""The production guard: settings that are fine on a laptop and unsafe in front of users.

In production (AUTHSVC_ENV=production) each check below refuses the start with its reason.
PRODUCTION_ALLOW_UNSAFE names checks an operator waives on purpose (a benchmark, one worker
with in-process rate limits); every waiver is logged as a warning at each start.
docs/production.md is the checklist for exactly these checks; keep the two together.

`problems(settings)` also checks the formats of the settings this module, the rate-limit
networks and the metrics listener add, in every environment.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("authsvc.production")

# OWASP Password Storage Cheat Sheet, argon2id: (memory KiB, iterations) pairs of equal
# strength, parallelism 1. A setting at least as strong as one row in both is enough.
OWASP_ARGON2 = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
KEY_ENTROPY_BITS = 128  # a key-encryption key must look at least this random
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters times the length: 0 for 'aaaa…', about 6 bits a
    character for base64 from a random source. A cheap upper bound of how random a key is."""
    if not text:
        return 0.0
    counts = Counter(text)
    per_char = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return per_char * len(text)


def _has_sequence(text: str, run: int = 8) -> bool:
    """A run of `run` characters each one more (or less) than the last: 'abcdefgh', '12345678'."""
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(text)]
    for start in range(len(steps) - run + 2):
        window = steps[start : start + run - 1]
        if len(window) == run - 1 and (all(d == 1 for d in window) or all(d == -1 for d in window)):
            return True
    return False


def weak_key_reason(key: str) -> str | None:
    if len(key.encode()) < 32:
        return "is shorter than 32 bytes"
    if entropy_bits(key) < KEY_ENTROPY_BITS or len(set(key)) < 10 or _has_sequence(key):
        return (
            "looks guessable (repeated or sequential characters); use 32 random bytes, "
            "e.g. `openssl rand -base64 32`"
        )
    return None


def _argon2_ok(s: Settings) -> bool:
    m, t = s.ARGON2_MEMORY_COST, s.ARGON2_TIME_COST
    return any(m >= memory and t >= time for memory, time in OWASP_ARGON2)


def _frontend_problem(s: Settings) -> str | None:
    parts = urlsplit(s.FRONTEND_URL)
    if parts.scheme != "https":
        return "FRONTEND_URL must be https:// in production (reset links carry a token)"
    if is_loopback_host(parts.hostname or ""):
        return "FRONTEND_URL must not point at localhost in production (reset links go to users)"
    return None


def _memory_storage(s: Settings) -> bool:
    return s.RATELIMIT_ENABLED and s.RATELIMIT_STORAGE_URI.startswith("memory")


# name -> (is the setting unsafe?, why). Names are what PRODUCTION_ALLOW_UNSAFE lists.
CHECKS: dict[str, tuple[Callable[[Settings], bool], Callable[[Settings], str]]] = {
    "outbox_mail": (
        lambda s: s.MAIL_BACKEND == "outbox",
        lambda s: (
            "MAIL_BACKEND=outbox writes live password-reset links to disk; production "
            "needs MAIL_BACKEND=smtp"
        ),
    ),
    "frontend_url": (
        lambda s: _frontend_problem(s) is not None,
        lambda s: _frontend_problem(s) or "",
    ),
    "smtp_plaintext": (
        lambda s: (
            s.MAIL_BACKEND == "smtp" and s.SMTP_TLS == "none" and not is_loopback_host(s.SMTP_HOST)
        ),
        lambda s: (
            f"SMTP_TLS=none would send reset links in clear to {s.SMTP_HOST}; use "
            "SMTP_TLS=starttls or ssl (none only for a relay on this host)"
        ),
    ),
    "rate_limits_off": (
        lambda s: not s.RATELIMIT_ENABLED,
        lambda s: "RATELIMIT_ENABLED=false leaves login open to password guessing",
    ),
    "memory_rate_limits": (
        _memory_storage,
        lambda s: (
            "RATELIMIT_STORAGE_URI=memory:// keeps limits per process, so every worker "
            "and instance multiplies them; use redis://… (or, with exactly one worker, "
            "WEB_CONCURRENCY=1 and PRODUCTION_ALLOW_UNSAFE=memory_rate_limits)"
        ),
    ),
    "argon2": (
        lambda s: not _argon2_ok(s),
        lambda s: (
            f"argon2id m={s.ARGON2_MEMORY_COST} KiB t={s.ARGON2_TIME_COST} is below "
            "OWASP's minimum (m=19456 KiB t=2, or m=47104 t=1, m=12288 t=3, m=9216 t=4, "
            "m=7168 t=5)"
        ),
    ),
    "sqlite": (
        lambda s: s.is_sqlite,
        lambda s: "DATABASE_URL is SQLite; production needs PostgreSQL (postgresql://…)",
    ),
    "weak_key_encryption_key": (
        lambda s: bool(s.JWT_KEY_ENCRYPTION_KEY and weak_key_reason(s.JWT_KEY_ENCRYPTION_KEY)),
        lambda s: f"JWT_KEY_ENCRYPTION_KEY {weak_key_reason(s.JWT_KEY_ENCRYPTION_KEY)}",
    ),
}


def metrics_bind_address(value: str) -> tuple[str, int] | None:
    """METRICS_BIND as (address, port): '127.0.0.1:9100' or '[::1]:9100'; None if invalid."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return None
    if address.version == 6 and not bracketed:
        return None
    return str(address), int(port)


def _format_problems(s: Settings) -> list[str]:
    problems = []
    unknown = sorted(set(s.PRODUCTION_ALLOW_UNSAFE) - set(CHECKS))
    if unknown:
        problems.append(
            f"PRODUCTION_ALLOW_UNSAFE lists unknown checks {', '.join(unknown)} "
            f"(known: {', '.join(CHECKS)})"
        )
    if not 32 <= s.RATELIMIT_IPV6_PREFIX <= 128:
        problems.append("RATELIMIT_IPV6_PREFIX must be 32 to 128 (bits)")
    if s.WEB_CONCURRENCY < 0:
        problems.append("WEB_CONCURRENCY must be a number of workers")
    if s.METRICS_BIND and metrics_bind_address(s.METRICS_BIND) is None:
        problems.append("METRICS_BIND must be an IP address and port, e.g. 127.0.0.1:9100")
    if s.METRICS_TOKEN and weak_key_reason(s.METRICS_TOKEN):
        problems.append(f"METRICS_TOKEN {weak_key_reason(s.METRICS_TOKEN)}")
    return problems


def problems(s: Settings) -> list[str]:
    """Everything wrong with `s` that this module knows of (see the module docstring)."""
    found = _format_problems(s)
    if not s.is_production:
        return found
    waived = set(s.PRODUCTION_ALLOW_UNSAFE)
    for name, (unsafe, reason) in CHECKS.items():
        if not unsafe(s):
            continue
        if name in waived:
            log.warning("production guard: %s (waived by PRODUCTION_ALLOW_UNSAFE)", reason(s))
        else:
            found.append(reason(s))
    if _memory_storage(s) and s.WEB_CONCURRENCY != 1 and "memory_rate_limits" in waived:
        found.append(
            "RATELIMIT_STORAGE_URI=memory:// may be waived only with one worker: set "
            "WEB_CONCURRENCY=1, or use redis://…"
        )
    return found
