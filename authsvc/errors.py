"""Domain exceptions: each carries its HTTP status, stable code and title; no Flask here."""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error a client may see. `detail` must never hold a secret."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    # True for an error whose use case's writes must stand: `db.transaction` commits them
    # before the error propagates (reuse detection ends the session, then answers 401).
    keeps_effects: bool = False

    def __init__(self, detail: str | None = None, *, errors: dict | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.headers: dict[str, str] = {}


class ValidationFailed(AuthError):
    status, code, title = 422, "validation_error", "Validation failed"

    @classmethod
    def field(cls, name: str, message: str) -> ValidationFailed:
        return cls(f"{name}: {message}", errors={name: [message]})


class InvalidJSON(AuthError):
    """A request body that is not one strict JSON value (duplicate keys, NaN, not UTF-8 …)."""

    status, code, title = 400, "invalid_json", "Invalid JSON body"


class BadRequestBody(AuthError):
    """A body that could not be read at all (a malformed chunked transfer coding …)."""

    status, code, title = 400, "bad_request", "Malformed request body"


class WeakPassword(AuthError):
    status, code, title = 422, "weak_password", "Password rejected by policy"

    def __init__(self, reason: str, field: str = "password") -> None:
        super().__init__(reason, errors={field: [reason]})


class EmailTaken(AuthError):
    status, code, title = 409, "email_taken", "Email already registered"


class Unauthorized(AuthError):
    """401s carry a WWW-Authenticate challenge (RFC 6750)."""

    status = 401

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": f'Bearer error="{self.bearer_error}"'}

    bearer_error = "invalid_token"


class InvalidCredentials(Unauthorized):
    code, title = "invalid_credentials", "Invalid email or password"
    bearer_error = "invalid_request"


class InvalidToken(Unauthorized):
    code, title = "invalid_token", "Invalid or revoked token"


class TokenExpired(Unauthorized):
    code, title = "token_expired", "Token expired"


class MissingToken(Unauthorized):
    code, title = "missing_token", "Authentication required"
    bearer_error = "invalid_request"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        # RFC 6750 §3.1: no error code when the request carried no credentials at all.
        self.headers = {"WWW-Authenticate": 'Bearer realm="authsvc"'}


class RefreshTokenReused(Unauthorized):
    code, title = "refresh_token_reused", "Refresh token reused; session revoked"
    keeps_effects = True


class CsrfFailed(AuthError):
    """A request that the refresh cookie would authenticate came from a page not allowed."""

    status, code, title = 403, "csrf_failed", "Cross-site request refused"


class InvalidResetToken(AuthError):
    status, code, title = 400, "invalid_reset_token", "Invalid or expired reset token"


class NotFound(AuthError):
    status, code, title = 404, "not_found", "Not found"


class RateLimited(AuthError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(AuthError):
    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"


class InvalidClient(AuthError):
    """A service client's credentials (introspection) are missing or wrong."""

    status, code, title = 401, "invalid_client", "Client authentication failed"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Basic realm="authsvc"'}


class Forbidden(AuthError):
    status, code, title = 403, "forbidden", "Forbidden"


class AccountDisabled(Forbidden):
    code, title = "account_disabled", "Account disabled"


class EmailNotVerified(Forbidden):
    code, title = "email_not_verified", "Email address not verified"


class InsufficientScope(Forbidden):
    """A caller who is authenticated but may not do this (RFC 6750 §3.1)."""

    code, title = "insufficient_scope", "Insufficient scope"


class InvalidEmailToken(AuthError):
    status, code, title = 400, "invalid_email_token", "Invalid or expired email token"
