"""schemathesis hooks (SCHEMATHESIS_HOOKS=fuzz.hooks): a fresh login for every generated
case that needs a Bearer token, so that a generated logout-all or session delete does not
leave the rest of the run testing only 401s; the service client's HTTP Basic credentials
for /introspect, and there a real access token in every other generated body, so that
active tokens' answers are checked as well as inactive ones."""

from __future__ import annotations

import base64
import json
import os
import urllib.request

import schemathesis

INTROSPECT = "/api/auth/introspect"


def fresh_access_token() -> str:
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


def client_basic() -> str:
    pair = f"{os.environ['FUZZ_CLIENT_ID']}:{os.environ['FUZZ_CLIENT_SECRET']}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


@schemathesis.auth(refresh_interval=None)
class Credentials:
    """The Authorization header: the client's Basic credentials for /introspect, a fresh
    access token as Bearer everywhere else."""

    def get(self, case, ctx):  # type: ignore[no-untyped-def]
        if case.path == INTROSPECT:
            return client_basic()
        return f"Bearer {fresh_access_token()}"

    def set(self, case, data, ctx):  # type: ignore[no-untyped-def]
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


@schemathesis.hook
def map_body(ctx, body):  # type: ignore[no-untyped-def]
    operation = ctx.operation
    if (
        operation is not None
        and operation.path == INTROSPECT
        and isinstance(body, dict)
        and isinstance(body.get("token"), str)
        and len(body["token"]) % 2 == 0  # about half the cases: generated tokens stay too
    ):
        body = {**body, "token": fresh_access_token()}
    return body
