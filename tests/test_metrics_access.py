"""Who may read /metrics: only on its own listener (METRICS_BIND), or with a bearer token
(METRICS_TOKEN); with neither, open in development and absent from production."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from conftest import bearer, free_port, production_settings

TOKEN = "mT4-vQz8Rk2Lw7Xc9Hb3Np6Jd1Fs5Gy0"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.slow
def test_metrics_bind_serves_metrics_on_its_own_listener_only(live_server):
    metrics_port = free_port()
    server = live_server(workers=2, threads=2, METRICS_BIND=f"127.0.0.1:{metrics_port}")
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    assert get(f"{server.url}/healthz")[0] == 200
    # The public listener does not serve /metrics...
    assert get(f"{server.url}/metrics")[0] == 404
    # ...its own listener does (every worker's samples), and serves nothing else.
    status, text = get(f"{metrics_url}/metrics")
    assert status == 200
    assert 'authsvc_http_requests_total{endpoint="/healthz"' in text
    assert get(f"{metrics_url}/healthz")[0] == 404
    assert get(f"{metrics_url}/api/auth/me", {"Authorization": "Bearer x"})[0] == 404
    assert get(f"{metrics_url}/api/openapi.json")[0] == 404


def test_metrics_token_is_required_when_set(make_app):
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.content_type == "application/problem+json"
    assert client.get("/metrics", headers=bearer("not-the-token")).status_code == 401
    assert client.get("/metrics", headers=bearer(TOKEN[:-1])).status_code == 401
    response = client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200
    assert "authsvc_http_requests_total" in response.get_data(as_text=True)


def test_production_keeps_metrics_off_the_public_listener_by_default(make_app, base_config):
    prod = production_settings(base_config["DATABASE_URL"], JWT_ALGORITHM="HS256")
    prod["JWT_SECRET"] = "Vb8-nR3qLz6Tw1Xk5Hc9Jm2Pd7Fs4Gy0"
    client = make_app(**prod).test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/healthz").status_code == 200
    # A token puts it back, for that token only.
    client = make_app(**prod, METRICS_TOKEN=TOKEN).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(TOKEN)).status_code == 200


def test_development_serves_metrics_openly(client):
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("value", ["9100", "localhost:9100", "127.0.0.1:99999", "::1:9100"])
def test_a_metrics_bind_that_is_not_an_address_and_port_is_refused(make_app, value):
    from authsvc.config import ConfigError

    with pytest.raises(ConfigError, match="METRICS_BIND must be an IP address and port"):
        make_app(METRICS_BIND=value)


def test_a_guessable_metrics_token_is_refused(make_app):
    from authsvc.config import ConfigError

    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        make_app(METRICS_TOKEN="metrics")
