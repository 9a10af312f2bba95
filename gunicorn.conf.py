"""gunicorn settings for authsvc (`gunicorn -c gunicorn.conf.py wsgi:app`).

AUTHSVC_GUNICORN_PROFILE=bench selects the benchmark profile (2 gthread workers x 4 threads,
no access log), the same settings `make bench` gives its ceilings.
"""

import multiprocessing
import os

profile = os.environ.get("AUTHSVC_GUNICORN_PROFILE", "default")

bind = os.environ.get("AUTHSVC_BIND", "127.0.0.1:8000")
# argon2-cffi releases the GIL while hashing, so a few threads per worker keep cores busy.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", 4))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")

if profile == "bench":
    workers = int(os.environ.get("WEB_CONCURRENCY", 2))
    threads = int(os.environ.get("GUNICORN_THREADS", 4))
    keepalive = 75  # the load generator keeps its connections open
    accesslog = None
