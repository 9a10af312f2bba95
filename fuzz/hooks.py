"""schemathesis hooks (SCHEMATHESIS_HOOKS=fuzz.hooks): a fresh login for every generated
case that needs a Bearer token, so that a generated logout-all or session delete does not
leave the rest of the run testing only 401s."""

from __future__ import annotations

import json
import os
import urllib.request

import schemathesis


@schemathesis.auth(refresh_interval=None)
class FreshAccessToken:
    def get(self, case, ctx):  # type: ignore[no-untyped-def]
        body = json.dumps(
            {"email": os.environ["FUZZ_EMAIL"], "password": os.environ["FUZZ_PASSWORD"]}
        ).encode()
        request = urllib.request.Request(
            f"{os.environ['FUZZ_BASE_URL']}/api/auth/login",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["access_token"]

    def set(self, case, data, ctx):  # type: ignore[no-untyped-def]
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
