"""Prometheus metrics at GET /metrics: requests and latency by endpoint, logins, refreshes,
refresh-token reuse, rate-limit hits.

The outcomes are read off each response (status and problem `code`) in one after_request
hook, so the services stay free of metrics code. Under gunicorn every worker is a process of
its own: gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at an empty directory before any
worker starts, each worker writes its samples there, and /metrics adds up all workers'
(prometheus-client's multiprocess mode). Without that variable (tests, `flask run`) the
app's own registry is served.

Who may read it: with METRICS_BIND (e.g. 127.0.0.1:9100) gunicorn opens a second listener
there (gunicorn.conf.py) and /metrics answers only on it, while that listener answers
nothing but /metrics. With METRICS_TOKEN a scraper must send `Authorization: Bearer <it>`
(both may be set). With neither, /metrics is open in development and absent (404) in
production.
"""

from __future__ import annotations

import hmac
import json
import os
import time

from flask import Flask, Response, abort, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from .errors import InvalidToken, MissingToken

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A client may send any method name; each distinct label value is a series kept for good.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LOGIN_ENDPOINT = "account.login"
REFRESH_ENDPOINT = "tokens.refresh"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "authsvc_http_requests_total",
            "HTTP requests by route, method and status",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "authsvc_http_request_duration_seconds",
            "Time to answer a request, by route and method",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.logins = Counter(
            "authsvc_logins_total",
            "Logins by outcome: ok, failed (wrong email or password), rate_limited, "
            "rejected (other 4xx), error (5xx)",
            ["outcome"],
            registry=registry,
        )
        self.refreshes = Counter(
            "authsvc_refreshes_total",
            "Refresh-token rotations by outcome: ok, invalid, reused, rate_limited, "
            "rejected, error",
            ["outcome"],
            registry=registry,
        )
        self.reuse = Counter(
            "authsvc_refresh_token_reuse_total",
            "Spent refresh tokens presented again (each revoked a session)",
            registry=registry,
        )
        self.rate_limited = Counter(
            "authsvc_rate_limited_total",
            "Requests refused with 429 rate_limited, by route",
            ["endpoint"],
            registry=registry,
        )

        # The children of the per-request series, by label values. prometheus-client's own
        # labels() validates, converts and takes a lock on every call; this is a dict lookup
        # (a race only asks labels() twice for the same child).
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _series(self, rule: str, method: str, status: int) -> tuple[Counter, Histogram]:
        key = (rule, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = (
                self.requests.labels(rule, method, str(status)),
                self.latency.labels(rule, method),
            )
            self._request_series[key] = series
        return series

    def observe(self, response: Response, seconds: float | None) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        url_rule = req.url_rule
        rule = url_rule.rule if url_rule is not None else "unmatched"
        method = req.method if req.method in METHODS else "OTHER"
        status = response.status_code
        requests, latency = self._series(rule, method, status)
        requests.inc()
        if seconds is not None:
            latency.observe(seconds)
        if status == 429:
            self.rate_limited.labels(rule).inc()
        if method != "POST":
            return
        endpoint = req.endpoint
        if endpoint == LOGIN_ENDPOINT:
            self.logins.labels(_outcome(status, {200: "ok", 401: "failed"})).inc()
        elif endpoint == REFRESH_ENDPOINT:
            outcome = _outcome(status, {200: "ok", 401: "invalid"})
            if outcome == "invalid" and _problem_code(response) == "refresh_token_reused":
                outcome = "reused"
                self.reuse.inc()
            self.refreshes.labels(outcome).inc()


def _outcome(status: int, known: dict[int, str]) -> str:
    if status in known:
        return known[status]
    if status == 429:
        return "rate_limited"
    return "error" if status >= 500 else "rejected"


def _problem_code(response: Response) -> str | None:
    if response.mimetype != "application/problem+json" or response.is_streamed:
        return None
    try:
        code = json.loads(response.get_data()).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _on_listener(address: tuple[str, int]) -> bool:
    """Did this request come in on the listener bound to `address`? Read off the connection
    gunicorn hands the app (WSGI servers without it: never); a wildcard address matches the
    port on any local address."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        local = sock.getsockname()
    except OSError:
        return False
    if not isinstance(local, tuple):
        return False  # a unix socket
    host, port = address
    return local[1] == port and host in (local[0], "0.0.0.0", "::")  # noqa: S104


def _bearer_matches(token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


def init_app(app: Flask) -> Metrics:
    metrics = Metrics(CollectorRegistry(auto_describe=True))
    app.extensions["authsvc_metrics"] = metrics

    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    def observe(response: Response) -> Response:
        started = g.get("metrics_started")
        metrics.observe(response, None if started is None else time.perf_counter() - started)
        return response

    from .production import metrics_bind_address

    settings = app.config["AUTHSVC_SETTINGS"]
    listener = metrics_bind_address(settings.METRICS_BIND) if settings.METRICS_BIND else None
    token = settings.METRICS_TOKEN

    def serve() -> Response:
        if listener is not None and not _on_listener(listener):
            abort(404)
        if token and not request.headers.get("Authorization"):
            raise MissingToken("/metrics needs Authorization: Bearer <METRICS_TOKEN>")
        if token and not _bearer_matches(token):
            raise InvalidToken("wrong metrics token")
        if listener is None and not token and settings.is_production:
            abort(404)  # production never serves metrics on the public listener by default
        registry = metrics.registry
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    if listener is not None:
        only_metrics_on = listener

        @app.before_request
        def metrics_listener_only() -> None:
            if request.endpoint != "metrics" and _on_listener(only_metrics_on):
                abort(404)

    app.before_request(start_timer)
    app.after_request(observe)
    app.add_url_rule("/metrics", "metrics", serve, methods=["GET"])
    return metrics
