"""The docs page works with no network: Swagger UI's files come from authsvc itself, under a
CSP that allows this origin only; a headless Chromium shows every operation (screenshot in
test-artifacts/). The page is off by default in production."""

from __future__ import annotations

import re
import shutil

import pytest

from authsvc.config import load_settings
from conftest import ROOT, production_settings

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,2400",
)


def test_the_page_and_its_assets_are_same_origin_only(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp
    assert "http" not in csp and "*" not in csp and "unsafe" not in csp
    html = page.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/api/docs/") for source in sources)
    assert "<script>" not in html  # no inline script: the CSP would block it
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert asset.headers["Content-Security-Policy"] == csp
        asset.close()
    assert client.get("/api/docs/assets/index.html").status_code == 404
    assert client.get("/api/docs/assets/..%2Fflask_swagger_ui.py").status_code == 404


def test_off_by_default_in_production_and_when_disabled(make_app):
    production = {
        **production_settings("postgresql://db.example.org/authsvc"),
        "JWT_ALGORITHM": "HS256",
        "JWT_SECRET": "s" * 32,
    }
    assert load_settings(production, environ={}).API_DOCS_ENABLED is False
    assert load_settings({**production, "API_DOCS_ENABLED": "true"}, environ={}).API_DOCS_ENABLED
    assert load_settings({}, environ={}).API_DOCS_ENABLED is True
    client = make_app(API_DOCS_ENABLED=False).test_client()
    assert client.get("/api/docs").status_code == 404
    assert client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 404
    assert client.get("/api/openapi.json").status_code == 200  # clients still get the contract


@pytest.mark.slow
def test_headless_chromium_shows_the_operations_with_no_network(live_server, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "chromium and chromedriver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run does it)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = live_server(workers=1, threads=2)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    spec = server.url + "/api/openapi.json"
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url + "/api/docs")
        WebDriverWait(driver, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-operation-id")) >= 17
        )
        shown = {
            element.text
            for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-operation-id")
        }
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "api-docs.png"))
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        console = driver.get_log("browser")
    finally:
        driver.quit()
    assert {"register", "login", "refreshToken", "logout", "getMe", "introspectToken"} <= shown
    assert spec in loaded
    assert all(url.startswith(server.url + "/") for url in loaded), loaded
    violations = [entry for entry in console if "Content Security Policy" in entry["message"]]
    assert not violations, violations
    assert (ARTIFACTS / "api-docs.png").stat().st_size > 10_000
