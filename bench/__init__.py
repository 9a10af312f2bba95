"""Benchmarks: `python -m bench` (make bench) drives authsvc and its ceilings with wrk."""
