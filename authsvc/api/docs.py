"""The interactive API docs at /api/docs: Swagger UI served by authsvc itself, no network.

The assets come from the pinned flask-swagger-ui package (its copy of swagger-ui-dist); the
page loads them and this module's own start-up script from this origin only, under a CSP
that allows nothing else (no inline script, no CDN). `API_DOCS_ENABLED` (off by default in
production) decides whether the page exists at all; /api/openapi.json is always served.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Flask, Response, abort, send_from_directory

SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
ASSET_MAX_AGE = 24 * 3600

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>authsvc API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/start.js"></script>
</body>
</html>
"""

# No validatorUrl: Swagger UI would otherwise send the document to a public validator.
START_SCRIPT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    displayOperationId: true,
  });
});
"""

bp = Blueprint("docs", __name__, url_prefix="/api/docs")


@bp.get("")
def page() -> Response:
    return Response(PAGE, mimetype="text/html")


@bp.get("/start.js")
def start_script() -> Response:
    return Response(START_SCRIPT, mimetype="text/javascript")


@bp.get("/assets/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    return send_from_directory(SWAGGER_UI_DIST, name, max_age=ASSET_MAX_AGE)


@bp.after_request
def _docs_policy(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
