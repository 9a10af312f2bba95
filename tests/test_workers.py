"""The gunicorn worker of gunicorn.conf.py spreads connections evenly over the workers
(authsvc/workers.py): its shared table, then real gunicorn with kept-alive connections."""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config

from authsvc.workers import ConnectionTable
from conftest import ROOT, free_port, server_env

BIN = Path(sys.executable).parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def test_rows_are_handed_out_once_and_come_back_when_released():
    table = ConnectionTable(rows=3)
    assert [table.claim(), table.claim(), table.claim()] == [0, 1, 2]
    assert table.claim() is None  # full: that worker accepts like plain gthread
    table.release(1)
    assert table.claim() == 1
    assert table.claim() is None


def test_the_fewest_elsewhere_leaves_out_its_own_free_starting_and_silent_rows():
    clock = FakeClock()
    table = ConnectionTable(rows=8, clock=clock)
    mine, other, starting, silent = (table.claim() for _ in range(4))
    # Claimed rows are workers still starting: present, but never the fewest.
    assert table.fewest_elsewhere(mine) > 10**9
    table.publish(mine, 0)
    table.publish(other, 5)
    table.publish(silent, 1)
    assert table.fewest_elsewhere(mine) == 1
    assert table.fewest_elsewhere(other) == 0
    clock.now += 1_500_000_000
    table.publish(mine, 0)
    table.publish(other, 5)
    table.publish(starting, 2**62)  # still starting, and saying so
    clock.now += 1_000_000_000  # `silent` last spoke 2.5 s ago, the others 1 s ago
    assert table.fewest_elsewhere(mine) == 5
    table.release(other)
    assert table.fewest_elsewhere(mine) > 10**9
    table.release(starting)
    assert table.fewest_elsewhere(mine) is None  # alone: always listening
    assert table.fewest_elsewhere(silent) == 0


def _publish_in_child(table: ConnectionTable, row: int, count: int) -> None:
    table.publish(row, count)


def test_forked_workers_and_their_master_share_the_table():
    table = ConnectionTable(rows=4)
    master_row, worker_row = table.claim(), table.claim()
    child = multiprocessing.get_context("fork").Process(
        target=_publish_in_child, args=(table, worker_row, 3)
    )
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert table.fewest_elsewhere(master_row) == 3


# --- real gunicorn ------------------------------------------------------------------------


class ConfiguredGunicorn:
    """gunicorn started the way deployments start it: `-c gunicorn.conf.py wsgi:app`."""

    def __init__(self, env: dict[str, str], access_log: Path) -> None:
        self.port = free_port()
        self.access_log = access_log
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env={
                **env,
                "AUTHSVC_BIND": f"127.0.0.1:{self.port}",
                "GUNICORN_ACCESS_LOG": str(access_log),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def served_by(self) -> dict[str, int]:
        """Request id -> pid of the worker that served it, from the JSON access log."""
        if not self.access_log.exists():
            return {}
        lines = [json.loads(line) for line in self.access_log.read_text().splitlines() if line]
        return {line["request_id"]: line["pid"] for line in lines if "request_id" in line}

    def wait_for_workers(self, count: int) -> None:
        """Until `count` different workers have served a request (each has booted)."""
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.process.stderr.read().decode()}")
            n += 1
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/healthz", headers={"X-Request-ID": f"boot-{n}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
            except OSError:
                time.sleep(0.1)
                continue
            if len(set(self.served_by().values())) >= count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"fewer than {count} gunicorn workers served within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


def _served_pids(server: ConfiguredGunicorn, ids: list[str]) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # access log lines are written after the response
        served = server.served_by()
        if all(i in served for i in ids):
            return [served[i] for i in ids]
        time.sleep(0.05)
    raise AssertionError("requests missing from the access log")


def _open_and_use(port: int, count: int, label: str) -> tuple[list[Any], list[str]]:
    """Open `count` connections at once, then send one request on each; keep them open."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]
    for connection in connections:
        connection.connect()
    ids = [f"{label}-{i}" for i in range(count)]
    for connection, request_id in zip(connections, ids, strict=True):
        connection.request("GET", "/healthz", headers={"X-Request-ID": request_id})
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Connection", "").lower() != "close"
    return connections, ids


def test_a_worker_takes_a_row_in_the_master_and_gives_it_back_when_it_has_exited():
    from authsvc.workers import BalancedThreadWorker, worker_exited

    made: list[BalancedThreadWorker] = []

    def worker() -> BalancedThreadWorker:  # made as gunicorn's master makes them, before forking
        made.append(
            BalancedThreadWorker(1, os.getpid(), [], None, 30, Config(), logging.getLogger())
        )
        return made[-1]

    try:
        first, second = worker(), worker()
        rows = (first._row, second._row)
        assert None not in rows and rows[0] != rows[1]
        worker_exited(first)
        assert worker()._row == rows[0]
    finally:
        for each in made:
            each.tmp.close()


@pytest.mark.slow
def test_kept_alive_connections_are_spread_evenly_over_the_workers(app, base_config, tmp_path):
    env = server_env(base_config, WEB_CONCURRENCY=2, GUNICORN_THREADS=4)
    server = ConfiguredGunicorn(env, tmp_path / "access.log")
    held: list[Any] = []
    try:
        server.wait_for_workers(2)
        time.sleep(0.5)  # the probes' connections, closed by urllib, are closed server-side
        for burst in range(3):
            # Eight connections at once, like a proxy's keep-alive pool (or the benchmark's
            # load generator): plain gthread often gives one worker 6, 7 or all 8 of them.
            connections, ids = _open_and_use(server.port, 8, f"burst{burst}")
            held.extend(connections)
            per_worker = Counter(_served_pids(server, ids))
            assert sorted(per_worker.values()) == [4, 4], per_worker
            for connection in connections:
                connection.close()
            held.clear()
            time.sleep(0.5)
        # One worker holding connections: the next ones go to the other until they are even.
        first, first_ids = _open_and_use(server.port, 1, "lone")
        held.extend(first)
        lone_pid = _served_pids(server, first_ids)[0]
        connections, ids = _open_and_use(server.port, 3, "after")
        held.extend(connections)
        per_worker = Counter(_served_pids(server, ids))
        assert per_worker[lone_pid] == 1 and sorted(per_worker.values()) == [1, 2], per_worker
    finally:
        for connection in held:
            connection.close()
        server.stop()


@pytest.mark.slow
def test_a_worker_that_dies_leaves_the_connections_to_the_others(app, base_config, tmp_path):
    env = server_env(base_config, WEB_CONCURRENCY=2, GUNICORN_THREADS=4)
    server = ConfiguredGunicorn(env, tmp_path / "access.log")
    held: list[Any] = []
    try:
        server.wait_for_workers(2)
        time.sleep(0.5)
        connections, ids = _open_and_use(server.port, 4, "before")
        pids = _served_pids(server, ids)
        assert sorted(Counter(pids).values()) == [2, 2]
        victim = pids[0]
        survivor = next(pid for pid in pids if pid != victim)
        for connection, pid in zip(connections, pids, strict=True):
            if pid == victim:
                connection.close()  # the victim is left with none: the fewest
            else:
                held.append(connection)
        time.sleep(0.5)
        # A request on one of its connections makes the survivor look at the table again:
        # it has more than the victim, so it stops listening.
        held[0].request("GET", "/healthz", headers={"X-Request-ID": "survivor-look"})
        held[0].getresponse().read()
        time.sleep(0.2)
        os.kill(victim, 9)
        # The master frees the dead worker's row at once: its last word ("none") must not
        # keep the survivor from listening until the replacement has booted.
        connections, ids = _open_and_use(server.port, 1, "meanwhile")
        held.extend(connections)
        assert _served_pids(server, ids) == [survivor]
        deadline = time.monotonic() + 60
        while True:  # probes, closed at once, until the replacement serves one
            assert time.monotonic() < deadline, "no replacement worker served within 60 s"
            connections, ids = _open_and_use(server.port, 1, f"probe{time.monotonic_ns()}")
            connections[0].close()
            if _served_pids(server, ids)[0] not in (victim, survivor):
                break
        time.sleep(0.5)
        # The survivor holds 3 of our connections, the replacement none: it gets the next 3.
        connections, ids = _open_and_use(server.port, 3, "after")
        held.extend(connections)
        per_worker = Counter(_served_pids(server, ids))
        assert len(per_worker) == 1 and survivor not in per_worker and victim not in per_worker
    finally:
        for connection in held:
            connection.close()
        server.stop()
