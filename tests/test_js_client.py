"""The reference JavaScript client's own unit tests (node's test runner), when node is here."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JS client's tests need it")
def test_js_client_unit_tests_pass():
    tests = sorted(str(p) for p in (ROOT / "clients/js/test").glob("*.test.js"))
    assert tests
    result = subprocess.run(
        [NODE, "--test", *tests], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
