"""Rate limits (flask-limiter) per client network and per account, and the login throttle's
hook. A client network is an IPv4 address or an IPv6 /64 (api/auth.py `client_network`).

Views are marked with `@rate_limited("login")` (module level, no app needed). `init_app`
gives each app its own Limiter, because settings and storage differ between apps, and wraps
the marked views of that app with the limits their policy names in the settings. Storage is
`RATELIMIT_STORAGE_URI`: `memory://` (per process) or Redis, shared by every worker and
instance; the login throttle (`services/throttle.py`) keeps its state in the same place.
`RATELIMIT_ENABLED=false` turns all of it off.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from limits.storage import MemoryStorage, RedisStorage
from werkzeug.exceptions import HTTPException

from ..errors import AuthError, InvalidCredentials, RateLimited
from ..security.tokens import hash_token
from ..services.common import ClientInfo
from ..services.throttle import (
    LoginThrottle,
    MemoryThrottleStore,
    RedisThrottleStore,
    ThrottlePolicy,
    ThrottleStore,
    account_fingerprint,
)
from .auth import client_network, runtime
from .cookies import cookie_token
from .parsing import is_json_body, request_json
from .problems import render_auth_error

log = logging.getLogger("authsvc.limits")
View = TypeVar("View", bound=Callable[..., Any])
_POLICY_ATTR = "_authsvc_rate_limit_policy"
_MAX_KEY_INPUT = 1024


def _ip_key() -> str:
    return "ip:" + client_network()


def _body_string(name: str) -> str | None:
    """A string field of the JSON body (the same parse the view uses), never raising: a body
    the view's parser will refuse anyway is simply not keyed by account."""
    try:
        body = request_json() if is_json_body(request.mimetype) else None
    except (AuthError, HTTPException):  # malformed, or over MAX_CONTENT_LENGTH
        body = None
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_KEY_INPUT else None


def _account_key() -> str:
    return "account:" + account_fingerprint(_body_string("email") or "")


def _account_network_key() -> str:
    # Keyed on the network too: guesses from elsewhere cannot use up the owner's allowance.
    # However many networks an attacker spreads over, the login throttle's account lane
    # still holds the account to about LOGIN_THROTTLE_ACCOUNT_HOURLY guesses an hour.
    return _account_key() + ":net:" + client_network()


def _no_email() -> bool:
    return _body_string("email") is None


def _presented_token() -> str | None:
    return _body_string("refresh_token") or cookie_token()


def _token_key() -> str:
    return "token:" + hash_token(_presented_token() or "")[:32]


def _no_token() -> bool:
    return _presented_token() is None


@dataclass(frozen=True)
class _Rule:
    setting: str
    key: Callable[[], str]
    exempt_when: Callable[[], bool] | None = None


POLICIES: dict[str, tuple[_Rule, ...]] = {
    "login": (
        _Rule("RATELIMIT_LOGIN_PER_IP", _ip_key),
        _Rule("RATELIMIT_LOGIN_PER_ACCOUNT", _account_network_key, _no_email),
    ),
    "register": (
        _Rule("RATELIMIT_REGISTER_PER_IP", _ip_key),
        _Rule("RATELIMIT_REGISTER_PER_ACCOUNT", _account_key, _no_email),
    ),
    "refresh": (
        _Rule("RATELIMIT_REFRESH_PER_IP", _ip_key),
        _Rule("RATELIMIT_REFRESH_PER_TOKEN", _token_key, _no_token),
    ),
    "forgot_password": (
        _Rule("RATELIMIT_FORGOT_PASSWORD_PER_IP", _ip_key),
        _Rule("RATELIMIT_FORGOT_PASSWORD_PER_ACCOUNT", _account_key, _no_email),
    ),
    "reset_password": (_Rule("RATELIMIT_RESET_PASSWORD_PER_IP", _ip_key),),
    "resend_verification": (
        _Rule("RATELIMIT_RESEND_VERIFICATION_PER_IP", _ip_key),
        _Rule("RATELIMIT_RESEND_VERIFICATION_PER_ACCOUNT", _account_key, _no_email),
    ),
}


def rate_limited(policy: str) -> Callable[[View], View]:
    """Mark a view for the limits of `policy` (see POLICIES); put it right under @blp.<method>."""
    if policy not in POLICIES:
        raise ValueError(f"unknown rate-limit policy {policy!r}")

    def mark(view: View) -> View:
        setattr(view, _POLICY_ATTR, policy)
        return view

    return mark


@dataclass(frozen=True)
class Limits:
    limiter: Limiter
    throttle: LoginThrottle


def _storage_options(uri: str) -> dict[str, Any]:
    if uri.startswith(("redis://", "rediss://", "redis+unix://")):
        # An unreachable Redis must cost a request a second, not a hung worker.
        return {"socket_connect_timeout": 1, "socket_timeout": 1}
    return {}


def _throttle_store(limiter: Limiter) -> ThrottleStore:
    storage = limiter.storage
    if isinstance(storage, RedisStorage):
        return RedisThrottleStore(storage.get_connection())
    assert isinstance(storage, MemoryStorage), type(storage)
    return MemoryThrottleStore()


def init_app(app: Flask) -> None:
    """Give `app` its limiter and throttle (or none, with RATELIMIT_ENABLED=false)."""
    settings = app.config["AUTHSVC_SETTINGS"]
    app.extensions["authsvc_limits"] = None
    if not settings.RATELIMIT_ENABLED:
        return  # in production only with PRODUCTION_ALLOW_UNSAFE (authsvc/production.py)
    limiter = Limiter(
        _ip_key,
        storage_uri=settings.RATELIMIT_STORAGE_URI,
        storage_options=_storage_options(settings.RATELIMIT_STORAGE_URI),
        strategy="moving-window",
        key_prefix=settings.RATELIMIT_KEY_PREFIX,
        headers_enabled=False,
        # Redis down: keep limiting per process and log it, rather than answer 500 or 503.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    limiter.init_app(app)
    for endpoint, view in list(app.view_functions.items()):
        policy = getattr(view, _POLICY_ATTR, None)
        if policy is None:
            continue
        for rule in POLICIES[policy]:
            value = getattr(settings, rule.setting).strip()
            if value:
                view = limiter.limit(value, key_func=rule.key, exempt_when=rule.exempt_when)(view)
        app.view_functions[endpoint] = view
    throttle = LoginThrottle(
        _throttle_store(limiter),
        ThrottlePolicy(
            free_attempts=settings.LOGIN_THROTTLE_FREE_ATTEMPTS,
            max_delay=settings.LOGIN_THROTTLE_MAX_DELAY,
            account_hourly=settings.LOGIN_THROTTLE_ACCOUNT_HOURLY,
        ),
        prefix=settings.RATELIMIT_KEY_PREFIX,
    )
    app.extensions["authsvc_limits"] = Limits(limiter, throttle)
    app.register_error_handler(RateLimitExceeded, _render_rate_limited)


def _render_rate_limited(error: RateLimitExceeded) -> Response:
    limiter = current_app.extensions["authsvc_limits"].limiter
    current = limiter.current_limit
    retry_after = 60
    if current is not None:
        try:
            retry_after = math.ceil(current.window.reset_time - time.time())
        except limiter.storage.base_exceptions:
            retry_after = current.limit.get_expiry()  # the whole window: never too early
    log.info("rate limited: %s on %s", error.description, request.endpoint)
    return render_auth_error(
        RateLimited(retry_after, f"too many requests ({error.description}); try again later")
    )


@contextmanager
def login_throttle(email: str, client: ClientInfo) -> Iterator[None]:
    """Around one password check: refuse while the account cools down (429), count a
    failure (InvalidCredentials), clear on success, give the turn back on anything else.
    `client` is the caller; the throttle keys on its network (client_network)."""
    limits: Limits | None = current_app.extensions.get("authsvc_limits")
    if limits is None:
        yield
        return
    clock = runtime().clock
    keys = limits.throttle.keys(email, client_network())
    limits.throttle.check(keys, clock())
    try:
        yield
    except InvalidCredentials:
        limits.throttle.failed(keys, clock())
        raise
    except BaseException:
        limits.throttle.release(keys)
        raise
    limits.throttle.succeeded(keys, clock())
