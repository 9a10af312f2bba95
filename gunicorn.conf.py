"""gunicorn settings for authsvc (`gunicorn -c gunicorn.conf.py wsgi:app`).

Workers from the CPU count (WEB_CONCURRENCY overrides), gunicorn's own gthread worker with
GUNICORN_THREADS threads each, graceful restarts, JSON lines for gunicorn's own log and the
access log (GUNICORN_ACCESS_LOG: a file, "-" for stdout, "off" for none), Prometheus
multiprocess mode for /metrics, a read timeout per connection (GUNICORN_READ_TIMEOUT), and the
settings checked once in the master so that a bad configuration stops the start with its
reason instead of a crash loop of workers.

AUTHSVC_GUNICORN_PROFILE=bench selects the benchmark profile (2 gthread workers x 4 threads,
no access log), the same settings `make bench` gives its ceilings.
"""

import os
import shutil
import socket
import struct
import tempfile


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


profile = os.environ.get("AUTHSVC_GUNICORN_PROFILE", "default")

bind = os.environ.get("AUTHSVC_BIND", "127.0.0.1:8000")
# argon2-cffi releases the GIL while hashing, so a few threads per worker keep cores busy.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", _cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", 4))
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 20  # on SIGTERM/HUP, in-flight requests get this long to finish
keepalive = 5
logger_class = "authsvc.logs.GunicornLogger"
# gunicorn's control socket (for gunicornc) is one path per user by default, which several
# instances on one host would share: off unless GUNICORN_CONTROL_SOCKET names a path.
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
if accesslog.lower() in ("off", "none", ""):
    accesslog = None

if profile == "bench":
    workers = int(os.environ.get("WEB_CONCURRENCY", 2))
    threads = int(os.environ.get("GUNICORN_THREADS", 4))
    keepalive = 75  # the load generator keeps its connections open
    accesslog = None

# Prometheus multiprocess mode: every worker writes its samples under this directory and
# /metrics adds them up. It must be set before a worker imports prometheus_client, hence here.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="authsvc-metrics-")
    os.environ["AUTHSVC_OWN_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    # Samples of an earlier run would be added to this one's: start from an empty directory.
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(metrics_dir, name))

    from authsvc.config import ConfigError, load_settings

    try:
        load_settings()
    except ConfigError as exc:
        # gunicorn prints "Error: <this>" and exits 1, before binding or forking a worker.
        raise RuntimeError(f"authsvc cannot start: {exc}") from None
    # METRICS_BIND: a second listener, for /metrics only (authsvc/metrics.py).
    metrics_bind = os.environ.get("METRICS_BIND")
    if metrics_bind and metrics_bind not in server.cfg.bind:
        server.cfg.set("bind", [*server.cfg.bind, metrics_bind])


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = os.environ.get("AUTHSVC_OWN_METRICS_DIR")
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)


def post_worker_init(worker):
    # A client that stops half-way through its headers or body would hold a thread for as
    # long as it keeps the connection open: gthread reads requests with blocking recv() and
    # no timeout. The kernel's receive timeout on the listening socket is inherited by every
    # connection accepted from it, so such a read fails after GUNICORN_READ_TIMEOUT seconds
    # without a byte and the thread is freed (docs/operations.md: behind nginx, which buffers
    # whole requests, gunicorn never sees a slow client at all).
    read_timeout = struct.pack("ll", int(os.environ.get("GUNICORN_READ_TIMEOUT", "10")), 0)
    for listener in worker.sockets:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, read_timeout)
