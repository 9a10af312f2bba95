"""What makes settings unusable: each check with the reason it gives (config.load_settings
raises them all at once). The production guard's own checks are in `production`."""

from __future__ import annotations

from dataclasses import fields
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from . import production
from .config import Settings

ENVIRONMENTS = ("development", "production")
ALGORITHMS = ("ES256", "EdDSA", "RS256", "HS256")
SMTP_TLS_MODES = ("none", "starttls", "ssl")
MAIL_BACKENDS = ("outbox", "smtp")
SETTING_NAMES = tuple(f.name for f in fields(Settings))


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
    name for name in SETTING_NAMES if name.startswith("RATELIMIT_") and "_PER_" in name
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


PRODUCTION_FLOORS = {  # seconds, and why production refuses less
    "ACCESS_TOKEN_TTL": (60, "clock skew between hosts (JWT_LEEWAY) would rival the lifetime"),
    "REFRESH_TOKEN_TTL": (60, "a device would be logged out after a minute idle"),
    "SESSION_MAX_LIFETIME": (60, "every login would end within a minute"),
    "PASSWORD_RESET_TTL": (60, "a reset email could expire before it is read"),
}


def _duration_problems(s: Settings) -> list[str]:
    """Outside production any duration may be 1 s (a front end exercising its refresh flow);
    SESSION_MAX_LIFETIME may be below REFRESH_TOKEN_TTL anywhere (it caps refresh tokens)."""
    problems = [] if s.ACCESS_TOKEN_TTL <= 24 * 3600 else ["ACCESS_TOKEN_TTL must be at most 24 h"]
    for name, (floor, reason) in PRODUCTION_FLOORS.items():
        if getattr(s, name) < (floor if s.is_production else 1):
            where = f" in production: {reason}" if s.is_production else ""
            problems.append(f"{name} must be at least {floor if where else 1} s{where}")
    return problems


def _cookie_problems(s: Settings) -> list[str]:
    path, name, same_site = s.REFRESH_COOKIE_PATH, s.REFRESH_COOKIE_NAME, s.REFRESH_COOKIE_SAMESITE
    checks = {
        "REFRESH_TOKEN_TRANSPORT must be body, cookie or both": (
            s.REFRESH_TOKEN_TRANSPORT in ("body", "cookie", "both")
        ),
        "REFRESH_COOKIE_SAMESITE must be Lax, Strict or None": same_site
        in ("Lax", "Strict", "None"),
        "REFRESH_COOKIE_SAMESITE=None needs CORS_ORIGINS": same_site != "None" or s.CORS_ORIGINS,
        "REFRESH_COOKIE_NAME must be letters, digits, '_'": (
            name.isascii() and name.replace("_", "a").isalnum()
        ),
        "REFRESH_COOKIE_PATH must be a path like /api/auth": (
            path[:1] == "/" and path[-1:] != "/" and not set(path) & set(";, \t\r\n")
        ),
    }
    return [message for message, ok in checks.items() if not ok]


def problems(s: Settings) -> list[str]:
    """Every reason `s` cannot be used, empty if none."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(s.AUTHSVC_ENV in ENVIRONMENTS, f"AUTHSVC_ENV must be one of {', '.join(ENVIRONMENTS)}")
    check(s.JWT_ALGORITHM in ALGORITHMS, f"JWT_ALGORITHM must be one of {', '.join(ALGORITHMS)}")
    check(0 <= s.JWT_LEEWAY <= 30, "JWT_LEEWAY must be between 0 and 30 seconds")
    problems.extend(_duration_problems(s))
    check(0 <= s.REFRESH_REUSE_GRACE <= 300, "REFRESH_REUSE_GRACE must be 0 to 300 seconds")
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
    check(8 <= s.PASSWORD_MIN_LENGTH <= 64, "PASSWORD_MIN_LENGTH must be 8 to 64")
    check(
        s.PASSWORD_MIN_LENGTH <= s.PASSWORD_MAX_LENGTH <= 1024,
        "PASSWORD_MAX_LENGTH must be PASSWORD_MIN_LENGTH to 1024",
    )
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
    problems.extend(production.problems(s))

    problems.extend(_cookie_problems(s))
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
    check(
        not s.PUBLIC_URL or _is_web_origin(s.PUBLIC_URL),
        "PUBLIC_URL must be an http(s) URL such as https://auth.example.org",
    )
    if s.is_production:
        check(bool(s.DATABASE_URL), "DATABASE_URL must be set in production")
        check(
            s.PUBLIC_URL.startswith("https://"),
            "PUBLIC_URL must be set in production to the https URL clients reach authsvc at "
            "(it is the token issuer that resource servers are configured with)",
        )
        if s.JWT_ALGORITHM != "HS256" and not s.JWT_PRIVATE_KEY_FILE:
            check(
                bool(s.JWT_KEY_ENCRYPTION_KEY),
                "JWT_KEY_ENCRYPTION_KEY must be set in production (it protects the signing "
                "keys stored in the database; authsvc never generates it there), or "
                "JWT_PRIVATE_KEY_FILE must name key files",
            )
    return problems
