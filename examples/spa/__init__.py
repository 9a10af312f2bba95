"""The demo single-page app: a static page on its own origin that signs in with authsvc."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT = HERE.parent.parent / "clients" / "js" / "authsvc-client.js"


class DemoHandler(SimpleHTTPRequestHandler):
    """The page's files, and the reference client at /authsvc-client.js."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == "/authsvc-client.js":
            return str(CLIENT)
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "strict-origin-when-cross-origin")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)


def make_server(host: str = "127.0.0.1", port: int = 3000, verbose: bool = False):
    """A threading HTTP server for the demo (port 0: any free port)."""
    handler = functools.partial(DemoHandler, directory=str(HERE))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.verbose = verbose  # type: ignore[attr-defined]
    return server
