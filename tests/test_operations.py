"""Operations: Prometheus /metrics (also summed over gunicorn workers), request ids in
responses and log lines, JSON access log, gunicorn.conf.py profiles."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authsvc.logs import JsonFormatter
from conftest import PASSWORD, ROOT

BIN = Path(sys.executable).parent


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_logins_refreshes_reuse_and_429s(make_app, clock):
    app = make_app(
        RATELIMIT_ENABLED=True,
        RATELIMIT_LOGIN_PER_IP="3/minute",
        RATELIMIT_LOGIN_PER_ACCOUNT="",
        REFRESH_REUSE_GRACE=0,
    )
    client = app.test_client()
    pair = client.post(
        "/api/auth/register", json={"email": "alice@example.com", "password": PASSWORD}
    ).get_json()
    ok = {"email": "alice@example.com", "password": PASSWORD}
    assert client.post("/api/auth/login", json=ok).status_code == 200
    assert client.post("/api/auth/login", json={**ok, "password": "wrong!"}).status_code == 401
    assert client.post("/api/auth/login", json=ok).status_code == 200
    assert client.post("/api/auth/login", json=ok).status_code == 429
    first = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert first.status_code == 200
    clock.advance(1)
    again = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.get_json()["code"] == "refresh_token_reused"

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = _samples(response.get_data(as_text=True))
    assert _value(samples, "authsvc_logins_total", outcome="ok") == 2
    assert _value(samples, "authsvc_logins_total", outcome="failed") == 1
    assert _value(samples, "authsvc_logins_total", outcome="rate_limited") == 1
    assert _value(samples, "authsvc_refreshes_total", outcome="ok") == 1
    assert _value(samples, "authsvc_refreshes_total", outcome="reused") == 1
    assert _value(samples, "authsvc_refresh_token_reuse_total") == 1
    assert _value(samples, "authsvc_rate_limited_total", endpoint="/api/auth/login") == 1
    login = {"endpoint": "/api/auth/login", "method": "POST"}
    assert _value(samples, "authsvc_http_requests_total", status="200", **login) == 2
    assert _value(samples, "authsvc_http_request_duration_seconds_count", **login) == 4


def test_made_up_methods_share_one_series(client):
    # Each label value is a series kept for good: a client must not be able to add them.
    for method in ("FOO", "BAR", "X" * 40):
        assert client.open("/healthz", method=method).status_code == 405
    samples = _samples(client.get("/metrics").get_data(as_text=True))
    assert (
        _value(
            samples,
            "authsvc_http_requests_total",
            endpoint="unmatched",
            method="OTHER",
            status="405",
        )
        == 3
    )
    assert not any({"FOO", "BAR"} & {v for _, v in labels} for _, labels in samples)


def test_request_id_is_echoed_when_sane_and_made_up_otherwise(client):
    given = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.42:1"})
    assert given.headers["X-Request-ID"] == "edge-7f3a.42:1"
    for insane in ["x" * 129, "a b", "ab\u00e9", "<script>"]:
        made = client.get("/healthz", headers={"X-Request-ID": insane})
        assert made.headers["X-Request-ID"] != insane
        assert len(made.headers["X-Request-ID"]) == 32
    fresh = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(fresh) == 3
    assert all(len(made) == 32 and int(made, 16) >= 0 for made in fresh)
    problem = client.post("/api/auth/login", data=b"x", content_type="application/xml")
    assert problem.status_code == 415
    assert problem.headers["X-Request-ID"]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_log_lines_carry_the_request_id(make_app, user):
    app = make_app(LOG_LEVEL="INFO")
    lines = _Lines()
    logger = logging.getLogger("authsvc")
    logger.addHandler(lines)
    try:
        response = app.test_client().post(
            "/api/auth/login",
            json={"email": "alice@example.com", "password": "wrong password"},
            headers={"X-Request-ID": "req-123"},
        )
    finally:
        logger.removeHandler(lines)
    assert response.status_code == 401
    events = [line for line in lines.lines if line.get("event") == "login_failed"]
    assert events
    assert events[0]["request_id"] == "req-123"
    assert "password" not in json.dumps(events)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.slow
def test_metrics_add_up_every_gunicorn_worker(live_server, tmp_path):
    access_log = tmp_path / "access.log"
    server = live_server(workers=2, threads=1, GUNICORN_ACCESS_LOG=str(access_log))
    # Enough requests, in parallel bursts, that both workers serve some (the second may still
    # be importing the app at first).
    deadline = time.monotonic() + 20
    sent = 0
    while time.monotonic() < deadline:
        for _ in range(10):
            assert _get(f"{server.url}/healthz")[0] == 200
            sent += 1
        if len(_pids(access_log, "/healthz")) == 2:
            break
        time.sleep(0.2)
    assert len(_pids(access_log, "/healthz")) == 2
    status, text = _get(f"{server.url}/metrics")
    assert status == 200
    samples = _samples(text)
    health = {"endpoint": "/healthz", "method": "GET", "status": "200"}
    # /readyz and /healthz polls by the fixture itself come on top of ours.
    assert _value(samples, "authsvc_http_requests_total", **health) >= sent
    served = [line for line in _access_lines(access_log) if line["path"] == "/healthz"]
    assert _value(samples, "authsvc_http_requests_total", **health) == len(served)


def _access_lines(access_log: Path) -> list[dict]:
    if not access_log.exists():
        return []
    return [json.loads(line) for line in access_log.read_text().splitlines() if line.strip()]


def _pids(access_log: Path, path: str) -> set[int]:
    return {line["pid"] for line in _access_lines(access_log) if line["path"] == path}


@pytest.mark.slow
def test_access_log_is_json_without_query_strings(live_server, tmp_path):
    access_log = tmp_path / "access.log"
    server = live_server(workers=1, threads=1, GUNICORN_ACCESS_LOG=str(access_log))
    request = urllib.request.Request(
        f"{server.url}/healthz?token=secret-reset-token",
        headers={"X-Request-ID": "trace-1", "Referer": "https://app/reset?token=secret"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        line.get("request_id") == "trace-1" for line in _access_lines(access_log)
    ):
        time.sleep(0.05)
    line = next(line for line in _access_lines(access_log) if line.get("request_id") == "trace-1")
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["logger"] == "gunicorn.access"
    assert "secret" not in access_log.read_text()


def _gunicorn_config(**env: str) -> dict[str, str]:
    """The settings gunicorn derives from gunicorn.conf.py (--print-config)."""
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--print-config", "wsgi:app"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("=")
        config[name.strip()] = value.strip()
    return config


@pytest.mark.slow
def test_gunicorn_profiles():
    default = _gunicorn_config()
    assert int(default["workers"]) == len(os.sched_getaffinity(0))
    assert default["worker_class"] == "gthread"  # stock gunicorn
    assert int(default["graceful_timeout"]) > 0
    assert default["logger_class"] == "authsvc.logs.GunicornLogger"
    bench = _gunicorn_config(AUTHSVC_GUNICORN_PROFILE="bench")
    assert (bench["workers"], bench["threads"], bench["accesslog"]) == ("2", "4", "None")
