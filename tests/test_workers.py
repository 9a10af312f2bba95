"""The gunicorn worker of gunicorn.conf.py spreads connections evenly over the workers
(authsvc/workers.py): its shared table, then real gunicorn with kept-alive connections."""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config

from authsvc.workers import BalancedThreadWorker, ConnectionTable, worker_exited


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


def test_a_worker_takes_a_row_in_the_master_and_gives_it_back_when_it_has_exited():
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


# --- real gunicorn ------------------------------------------------------------------------


def _served_by(access_log: Path) -> dict[str, int]:
    """Request id -> pid of the worker that served it, from the JSON access log."""
    if not access_log.exists():
        return {}
    lines = [json.loads(line) for line in access_log.read_text().splitlines() if line]
    return {line["request_id"]: line["pid"] for line in lines if "request_id" in line}


def _served_pids(access_log: Path, ids: list[str]) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # access log lines are written after the response
        served = _served_by(access_log)
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


class TwoWorkers:
    """gunicorn with gunicorn.conf.py's worker, 2 workers x 4 threads, both booted; the
    connections a test keeps open are closed after it."""

    def __init__(self, live_server: Any, access_log: Path) -> None:
        self.access_log = access_log
        self.server = live_server(workers=2, threads=4, GUNICORN_ACCESS_LOG=str(access_log))
        self.port = self.server.port
        self.held: list[Any] = []
        self._probes = 0
        first = self.probe_until(lambda pid: True)
        self.probe_until(lambda pid: pid != first)  # each worker has booted and served

    def probe_until(self, wanted: Callable[[int], bool]) -> int:
        """One-request connections, closed at once, until a worker `wanted` serves one; its
        pid. Waits until the server has closed them too."""
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no wanted worker served within 60 s"
            self._probes += 1
            connections, ids = _open_and_use(self.port, 1, f"probe{self._probes}")
            connections[0].close()
            [pid] = _served_pids(self.access_log, ids)
            if wanted(pid):
                time.sleep(0.5)
                return pid
            time.sleep(0.05)

    def open(self, count: int, label: str) -> tuple[list[Any], list[int]]:
        """`count` new connections at once, kept open, and the pid serving each."""
        connections, ids = _open_and_use(self.port, count, label)
        self.held.extend(connections)
        return connections, _served_pids(self.access_log, ids)

    def close_all(self) -> None:
        for connection in self.held:
            connection.close()
        self.held.clear()


@pytest.fixture
def two_workers(app: Any, live_server: Any, tmp_path: Path) -> Iterator[TwoWorkers]:
    servers = TwoWorkers(live_server, tmp_path / "access.log")
    yield servers
    servers.close_all()


@pytest.mark.slow
def test_kept_alive_connections_are_spread_evenly_over_the_workers(two_workers):
    for burst in range(3):
        # Eight connections at once, like a proxy's keep-alive pool (or the benchmark's load
        # generator): plain gthread often gives one worker 6, 7 or all 8 of them.
        _, pids = two_workers.open(8, f"burst{burst}")
        assert sorted(Counter(pids).values()) == [4, 4], Counter(pids)
        two_workers.close_all()
        time.sleep(0.5)
    # One worker holding a connection: the next ones go to the other until they are even.
    _, [lone_pid] = two_workers.open(1, "lone")
    _, pids = two_workers.open(3, "after")
    per_worker = Counter(pids)
    assert per_worker[lone_pid] == 1 and sorted(per_worker.values()) == [1, 2], per_worker


@pytest.mark.slow
def test_a_worker_that_dies_leaves_the_connections_to_the_others(two_workers):
    connections, pids = two_workers.open(4, "before")
    assert sorted(Counter(pids).values()) == [2, 2]
    victim = pids[0]
    survivor = next(pid for pid in pids if pid != victim)
    kept = [c for c, pid in zip(connections, pids, strict=True) if pid == survivor]
    for connection, pid in zip(connections, pids, strict=True):
        if pid == victim:
            connection.close()  # the victim is left with none: the fewest
    time.sleep(0.5)
    # A request on one of its connections makes the survivor look at the table again: it has
    # more than the victim, so it stops listening.
    kept[0].request("GET", "/healthz", headers={"X-Request-ID": "survivor-look"})
    kept[0].getresponse().read()
    time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)
    # The master frees the dead worker's row at once: its last word ("none") must not keep
    # the survivor from listening until the replacement has booted.
    _, served = two_workers.open(1, "meanwhile")
    assert served == [survivor]
    two_workers.probe_until(lambda pid: pid not in (victim, survivor))  # the replacement
    # The survivor holds 3 of our connections, the replacement none: it gets the next 3.
    _, pids = two_workers.open(3, "after")
    assert len(set(pids)) == 1 and pids[0] not in (victim, survivor), pids
