"""`python -m examples.spa [--port 3000]`: serve the demo on http://localhost:3000."""

from __future__ import annotations

import argparse
import contextlib

from . import make_server

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=3000)
args = parser.parse_args()
server = make_server(args.host, args.port, verbose=True)
print(
    f"demo on http://localhost:{args.port}/ (authsvc expected on http://localhost:8000: "
    f"`make run`; another API: http://localhost:{args.port}/?api=http://host:port)"
)
with contextlib.suppress(KeyboardInterrupt):
    server.serve_forever()
