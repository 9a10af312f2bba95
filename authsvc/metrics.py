"""Prometheus metrics at GET /metrics: requests and latency by endpoint, logins, refreshes,
refresh-token reuse, rate-limit hits.

The outcomes are read off each response (status and problem `code`) in one after_request
hook, so the services stay free of metrics code. Under gunicorn every worker is a process of
its own: gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at an empty directory before any
worker starts, each worker writes its samples there, and /metrics adds up all workers'
(prometheus-client's multiprocess mode). Without that variable (tests, `flask run`) the
app's own registry is served.
"""

from __future__ import annotations

import json
import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

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


def init_app(app: Flask) -> Metrics:
    metrics = Metrics(CollectorRegistry(auto_describe=True))
    app.extensions["authsvc_metrics"] = metrics

    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    def observe(response: Response) -> Response:
        started = g.get("metrics_started")
        metrics.observe(response, None if started is None else time.perf_counter() - started)
        return response

    def serve() -> Response:
        registry = metrics.registry
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    app.before_request(start_timer)
    app.after_request(observe)
    app.add_url_rule("/metrics", "metrics", serve, methods=["GET"])
    return metrics
