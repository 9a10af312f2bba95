"""Settings: defaults + environment (+ explicit overrides) -> one validated, frozen object
(the checks are in config_checks)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True)
class Settings:
    """Every knob of authsvc, named as its environment variable (docs/configuration.md)."""

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
    JWT_ISSUER: str = ""  # default: PUBLIC_URL when set, else "authsvc"
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
    CORS_ORIGINS: tuple[str, ...] = ()  # development: FRONTEND_URL's origin when empty
    # The refresh token in the JSON body, in an HttpOnly cookie, or both (authsvc/api/cookies.py).
    REFRESH_TOKEN_TRANSPORT: str = "both"  # noqa: S105 (a mode, not a secret)
    REFRESH_COOKIE_NAME: str = "authsvc_refresh"
    REFRESH_COOKIE_PATH: str = "/api/auth"  # the API as browsers see it; /refresh, /logout
    REFRESH_COOKIE_SAMESITE: str = "Lax"

    RATELIMIT_ENABLED: bool = True
    RATELIMIT_STORAGE_URI: str = "memory://"
    RATELIMIT_IPV6_PREFIX: int = 64  # IPv6 clients are limited per network of this size
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
    # Where clients reach authsvc (https://auth.example.org): the issuer, discovery's URLs.
    PUBLIC_URL: str = ""
    API_DOCS_ENABLED: bool = True  # default: off in production

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
    # authsvc/metrics.py: /metrics on its own listener, or behind a bearer token.
    METRICS_BIND: str = ""
    METRICS_TOKEN: str = field(default="", repr=False)
    # authsvc/production.py: the guard's checks, and the ones an operator waives (logged).
    WEB_CONCURRENCY: int = 0
    PRODUCTION_ALLOW_UNSAFE: tuple[str, ...] = ()

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
    production = values.get("AUTHSVC_ENV") == "production"
    values.setdefault("API_DOCS_ENABLED", not production)
    values["PUBLIC_URL"] = values.get("PUBLIC_URL", "").rstrip("/")
    values["JWT_ISSUER"] = values.get("JWT_ISSUER") or values["PUBLIC_URL"] or "authsvc"
    if not values.get("INSTANCE_PATH"):
        values["INSTANCE_PATH"] = instance_path or str(Path.cwd() / "instance")
    settings = Settings(**values)
    from .config_checks import problems  # (it imports Settings from here)

    settings = _fill_defaults(settings)
    found = problems(settings)
    if found:
        raise ConfigError("invalid configuration: " + "; ".join(found))
    return settings


def _fill_defaults(s: Settings) -> Settings:
    """Defaults that depend on other settings (paths under the instance folder)."""
    changes: dict[str, Any] = {}
    if not s.DATABASE_URL and not s.is_production:
        changes["DATABASE_URL"] = f"sqlite:///{Path(s.INSTANCE_PATH) / 'authsvc.db'}"
    elif s.DATABASE_URL:
        changes["DATABASE_URL"] = normalise_database_url(s.DATABASE_URL)
    if not s.MAIL_OUTBOX_DIR:
        changes["MAIL_OUTBOX_DIR"] = str(Path(s.INSTANCE_PATH) / "outbox")
    parts = urlsplit(s.FRONTEND_URL)
    web = parts.scheme in ("http", "https") and bool(parts.hostname)
    if not s.CORS_ORIGINS and not s.is_production and web:
        # The development front end (the demo SPA on localhost:3000) works out of the box.
        changes["CORS_ORIGINS"] = (f"{parts.scheme}://{parts.netloc}".lower(),)
    return Settings(**{**s.__dict__, **changes}) if changes else s
