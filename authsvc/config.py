"""Settings: defaults + environment (+ explicit overrides) -> one validated, frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "production")
ALGORITHMS = ("ES256", "EdDSA", "RS256", "HS256")
SMTP_TLS_MODES = ("none", "starttls", "ssl")
MAIL_BACKENDS = ("outbox", "smtp")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True)
class Settings:
    """Every knob of authsvc. Names match the environment variables (README lists them)."""

    AUTHSVC_ENV: str = "development"
    INSTANCE_PATH: str = ""
    DATABASE_URL: str = ""
    DATABASE_POOL_SIZE: int = 5

    ACCESS_TOKEN_TTL: int = 1800
    REFRESH_TOKEN_TTL: int = 7 * 24 * 3600
    SESSION_MAX_LIFETIME: int = 30 * 24 * 3600
    REFRESH_REUSE_GRACE: int = 10
    # A retry within the grace window from another IP or user agent: recorded as
    # refresh_token_replayed; with this on, also treated as reuse (the session ends).
    REFRESH_REUSE_GRACE_BIND: bool = False
    PASSWORD_RESET_TTL: int = 1800

    JWT_ALGORITHM: str = "ES256"
    JWT_SECRET: str = field(default="", repr=False)
    JWT_PRIVATE_KEY_FILE: str = ""
    JWT_KEY_ENCRYPTION_KEY: str = field(default="", repr=False)
    JWT_KEY_PREPUBLISH: int = 600
    JWT_KEYS_RELOAD_INTERVAL: int = 30
    JWT_LEEWAY: int = 10
    JWT_ISSUER: str = "authsvc"
    JWT_AUDIENCE: str = "authsvc"

    ARGON2_MEMORY_COST: int = 19 * 1024
    ARGON2_TIME_COST: int = 2
    ARGON2_PARALLELISM: int = 1
    # argon2 runs at once on this host, across all workers and threads (0: no limit): more
    # than there are cores only makes each slower. Slots are lock files in INSTANCE_PATH.
    ARGON2_CONCURRENCY: int = _usable_cpus()
    PASSWORD_MIN_LENGTH: int = 12
    PASSWORD_MAX_LENGTH: int = 256

    MAX_CONTENT_LENGTH: int = 64 * 1024
    TRUSTED_PROXY_HOPS: int = 0
    CORS_ORIGINS: tuple[str, ...] = ()

    RATELIMIT_ENABLED: bool = True
    RATELIMIT_STORAGE_URI: str = "memory://"
    # Rate limits in flask-limiter notation ("N/period;M/period"); an empty value turns one off.
    RATELIMIT_KEY_PREFIX: str = "authsvc"
    RATELIMIT_LOGIN_PER_IP: str = "30/minute;300/hour"
    RATELIMIT_LOGIN_PER_ACCOUNT: str = "20/minute"
    RATELIMIT_REGISTER_PER_IP: str = "10/minute;50/hour"
    RATELIMIT_REGISTER_PER_ACCOUNT: str = "10/hour"
    RATELIMIT_REFRESH_PER_IP: str = "120/minute"
    RATELIMIT_REFRESH_PER_TOKEN: str = "10/minute"  # noqa: S105 (a limit, not a secret)
    RATELIMIT_FORGOT_PASSWORD_PER_IP: str = "10/minute;50/hour"  # noqa: S105
    RATELIMIT_FORGOT_PASSWORD_PER_ACCOUNT: str = "5/hour;20/day"  # noqa: S105
    RATELIMIT_RESET_PASSWORD_PER_IP: str = "10/minute;100/hour"  # noqa: S105
    # Growing delays after failed logins (authsvc/services/throttle.py).
    LOGIN_THROTTLE_FREE_ATTEMPTS: int = 5
    LOGIN_THROTTLE_MAX_DELAY: int = 900
    LOGIN_THROTTLE_ACCOUNT_HOURLY: int = 100

    MAIL_BACKEND: str = "outbox"
    MAIL_OUTBOX_DIR: str = ""
    MAIL_FROM: str = "authsvc <no-reply@localhost>"
    SMTP_HOST: str = "localhost"
    SMTP_PORT: int = 25
    SMTP_TLS: str = "none"
    SMTP_USERNAME: str = ""
    SMTP_PASSWORD: str = field(default="", repr=False)
    SMTP_TIMEOUT: int = 10
    SMTP_CA_FILE: str = ""
    FRONTEND_URL: str = "http://localhost:3000"

    # Account lifecycle (docs/accounts.md).
    REQUIRE_VERIFIED_EMAIL: bool = False
    EMAIL_VERIFICATION_TTL: int = 2 * 24 * 3600
    EMAIL_CHANGE_TTL: int = 3600
    RATELIMIT_RESEND_VERIFICATION_PER_IP: str = "10/minute;50/hour"
    RATELIMIT_RESEND_VERIFICATION_PER_ACCOUNT: str = "3/hour;10/day"
    PRODUCT_NAME: str = "authsvc"
    MAIL_TEMPLATES_DIR: str = ""
    NOTIFY_REFRESH_TOKEN_REUSE: bool = True
    NOTIFY_PASSWORD_CHANGED: bool = True
    NOTIFY_PASSWORD_RESET: bool = True
    NOTIFY_EMAIL_CHANGED: bool = True
    NOTIFY_NEW_DEVICE: bool = False

    LOG_LEVEL: str = "INFO"

    @property
    def is_production(self) -> bool:
        return self.AUTHSVC_ENV == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Turn an environment string (or an override value) into the field's type."""
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}")
    if isinstance(default, int):
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if isinstance(default, tuple):
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(item.strip() for item in items if item.strip())
    return str(raw)


def normalise_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3, like `postgresql+psycopg://`."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    instance_path: str | None = None,
) -> Settings:
    """Build Settings from defaults, then the environment, then `overrides`; validate them."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        default = f.default
        if name in environ:
            values[name] = _coerce(name, environ[name], default)
        if overrides and name in overrides:
            values[name] = _coerce(name, overrides[name], default)
    if not values.get("INSTANCE_PATH"):
        values["INSTANCE_PATH"] = instance_path or str(Path.cwd() / "instance")
    settings = Settings(**values)
    return _validate(_fill_defaults(settings))


def _fill_defaults(s: Settings) -> Settings:
    """Defaults that depend on other settings (paths under the instance folder)."""
    changes: dict[str, Any] = {}
    if not s.DATABASE_URL and not s.is_production:
        changes["DATABASE_URL"] = f"sqlite:///{Path(s.INSTANCE_PATH) / 'authsvc.db'}"
    elif s.DATABASE_URL:
        changes["DATABASE_URL"] = normalise_database_url(s.DATABASE_URL)
    if not s.MAIL_OUTBOX_DIR:
        changes["MAIL_OUTBOX_DIR"] = str(Path(s.INSTANCE_PATH) / "outbox")
    return Settings(**{**s.__dict__, **changes}) if changes else s


def _is_mailbox(value: str) -> bool:
    """A From header value: one address with a domain, nothing that could split a header."""
    if "\r" in value or "\n" in value:
        return False
    local, _, domain = parseaddr(value)[1].rpartition("@")
    return bool(local and domain)


def _is_web_origin(value: str) -> bool:
    """FRONTEND_URL: an absolute http(s) URL that a path and a query can be appended to."""
    parts = urlsplit(value)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.query
        and not parts.fragment
    )


RATELIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
RATE_LIMIT_SETTINGS = tuple(
    name for name in _FIELDS if name.startswith("RATELIMIT_") and "_PER_" in name
)


def _is_exact_origin(value: str) -> bool:
    """An origin as browsers send it: scheme://host[:port], nothing after."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and f"{parts.scheme}://{parts.netloc}" == value
        and "@" not in parts.netloc
    )


def _rate_limit_problems(s: Settings) -> list[str]:
    from limits import parse_many

    problems = []
    scheme = s.RATELIMIT_STORAGE_URI.partition("://")[0]
    if scheme not in RATELIMIT_SCHEMES:
        problems.append("RATELIMIT_STORAGE_URI must be memory:// or a redis://… URI")
    if not (1 <= len(s.RATELIMIT_KEY_PREFIX) <= 64) or not all(
        c.isalnum() or c in "-_." for c in s.RATELIMIT_KEY_PREFIX
    ):
        problems.append("RATELIMIT_KEY_PREFIX must be 1-64 letters, digits, '-', '_' or '.'")
    for name in RATE_LIMIT_SETTINGS:
        value = getattr(s, name)
        try:
            if value.strip():
                parse_many(value)
        except ValueError:
            problems.append(f"{name} must be limits like '10/minute;100/hour', not {value!r}")
    if not 1 <= s.LOGIN_THROTTLE_FREE_ATTEMPTS <= 100:
        problems.append("LOGIN_THROTTLE_FREE_ATTEMPTS must be 1 to 100")
    if not 1 <= s.LOGIN_THROTTLE_MAX_DELAY <= 24 * 3600:
        problems.append("LOGIN_THROTTLE_MAX_DELAY must be 1 s to 24 h")
    if not 1 <= s.LOGIN_THROTTLE_ACCOUNT_HOURLY <= 3600:
        problems.append("LOGIN_THROTTLE_ACCOUNT_HOURLY must be 1 to 3600")
    return problems


def _validate(s: Settings) -> Settings:
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(s.AUTHSVC_ENV in ENVIRONMENTS, f"AUTHSVC_ENV must be one of {', '.join(ENVIRONMENTS)}")
    check(s.JWT_ALGORITHM in ALGORITHMS, f"JWT_ALGORITHM must be one of {', '.join(ALGORITHMS)}")
    check(0 <= s.JWT_LEEWAY <= 30, "JWT_LEEWAY must be between 0 and 30 seconds")
    check(60 <= s.ACCESS_TOKEN_TTL <= 24 * 3600, "ACCESS_TOKEN_TTL must be 60 s to 24 h")
    check(s.REFRESH_TOKEN_TTL >= 60, "REFRESH_TOKEN_TTL must be at least 60 s")
    check(
        s.SESSION_MAX_LIFETIME >= s.REFRESH_TOKEN_TTL,
        "SESSION_MAX_LIFETIME must be at least REFRESH_TOKEN_TTL",
    )
    check(0 <= s.REFRESH_REUSE_GRACE <= 300, "REFRESH_REUSE_GRACE must be 0 to 300 seconds")
    check(s.PASSWORD_RESET_TTL >= 60, "PASSWORD_RESET_TTL must be at least 60 s")
    check(8 <= s.PASSWORD_MIN_LENGTH <= 64, "PASSWORD_MIN_LENGTH must be 8 to 64")
    check(s.ARGON2_MEMORY_COST >= 8, "ARGON2_MEMORY_COST is in KiB and must be at least 8")
    check(s.ARGON2_TIME_COST >= 1, "ARGON2_TIME_COST must be at least 1")
    check(s.ARGON2_PARALLELISM >= 1, "ARGON2_PARALLELISM must be at least 1")
    check(0 <= s.ARGON2_CONCURRENCY <= 1024, "ARGON2_CONCURRENCY must be 0 (no limit) to 1024")
    check(s.MAX_CONTENT_LENGTH >= 1024, "MAX_CONTENT_LENGTH must be at least 1024 bytes")
    check(0 <= s.TRUSTED_PROXY_HOPS <= 10, "TRUSTED_PROXY_HOPS must be 0 to 10")
    check("*" not in s.CORS_ORIGINS, "CORS_ORIGINS must list origins; '*' is not allowed")
    check(
        all(_is_exact_origin(o) for o in s.CORS_ORIGINS),
        "CORS_ORIGINS must be origins like https://app.example.org (scheme, host, optional "
        "port; no path, no trailing slash)",
    )
    problems.extend(_rate_limit_problems(s))
    check(
        s.MAIL_BACKEND in MAIL_BACKENDS, f"MAIL_BACKEND must be one of {', '.join(MAIL_BACKENDS)}"
    )
    check(s.SMTP_TLS in SMTP_TLS_MODES, f"SMTP_TLS must be one of {', '.join(SMTP_TLS_MODES)}")
    check(1 <= s.SMTP_PORT <= 65535, "SMTP_PORT must be 1 to 65535")
    check(1 <= s.SMTP_TIMEOUT <= 300, "SMTP_TIMEOUT must be 1 to 300 seconds")
    check(
        not s.SMTP_USERNAME or s.SMTP_TLS != "none",
        "SMTP_USERNAME needs SMTP_TLS=starttls or ssl (credentials are never sent in clear)",
    )
    check(
        not s.SMTP_CA_FILE or Path(s.SMTP_CA_FILE).is_file(),
        "SMTP_CA_FILE must name a readable PEM file",
    )
    check(_is_mailbox(s.MAIL_FROM), "MAIL_FROM must be an address, e.g. 'authsvc <no-reply@x.org>'")
    check(
        _is_web_origin(s.FRONTEND_URL),
        "FRONTEND_URL must be an http(s) URL such as https://app.x.org",
    )
    check(s.EMAIL_VERIFICATION_TTL >= 60, "EMAIL_VERIFICATION_TTL must be at least 60 s")
    check(s.EMAIL_CHANGE_TTL >= 60, "EMAIL_CHANGE_TTL must be at least 60 s")
    check(
        not s.MAIL_TEMPLATES_DIR or Path(s.MAIL_TEMPLATES_DIR).is_dir(),
        "MAIL_TEMPLATES_DIR must name a directory",
    )
    check(
        0 < len(s.PRODUCT_NAME) <= 100 and s.PRODUCT_NAME.isprintable(),
        "PRODUCT_NAME must be 1 to 100 printable characters",
    )
    check(s.DATABASE_POOL_SIZE >= 1, "DATABASE_POOL_SIZE must be at least 1")
    if s.JWT_ALGORITHM == "HS256":
        check(
            len(s.JWT_SECRET.encode()) >= 32,
            "JWT_SECRET must be at least 32 bytes when JWT_ALGORITHM is HS256",
        )
    check(1 <= s.JWT_KEYS_RELOAD_INTERVAL <= 3600, "JWT_KEYS_RELOAD_INTERVAL must be 1 to 3600 s")
    check(s.JWT_KEY_PREPUBLISH >= 0, "JWT_KEY_PREPUBLISH must be at least 0 s")
    if s.JWT_KEY_ENCRYPTION_KEY:
        check(
            len(s.JWT_KEY_ENCRYPTION_KEY.encode()) >= 32,
            "JWT_KEY_ENCRYPTION_KEY must be at least 32 bytes",
        )
    if s.is_production:
        check(bool(s.DATABASE_URL), "DATABASE_URL must be set in production")
        if s.JWT_ALGORITHM != "HS256" and not s.JWT_PRIVATE_KEY_FILE:
            check(
                bool(s.JWT_KEY_ENCRYPTION_KEY),
                "JWT_KEY_ENCRYPTION_KEY must be set in production (it protects the signing "
                "keys stored in the database; authsvc never generates it there), or "
                "JWT_PRIVATE_KEY_FILE must name key files",
            )
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return s
