"""gunicorn's gthread worker, taking new connections only while it has no more than the others.

Every gthread worker accepts from the one listening socket, whoever wakes first, however many
connections it already serves (gunicorn issues 2817, 3433). Clients that keep a few
connections open — a proxy's keep-alive pool, a load generator — can end up with most of them
on one worker, whose threads then queue behind its GIL while another core idles. Under the
benchmark's refresh load on PostgreSQL (two workers, eight kept-alive connections), plain
gthread split the connections 4-4 in 1 run of 12 and 7-1 or 8-0 in 4; the CPU then stood idle
11 % of the time on average, up to 26 % at 8-0, against 8 % with the split always 4-4 here.

Here the master and its workers share a table of each worker's open connections, and a worker
listens for new ones only while its count is the lowest (ties included). Someone is always
listening: the worker with the fewest. Each worker looks at the table after every event on
its own connections, and at least every `LISTENING_POLL` seconds (`IDLE_POLL` while it is not
listening) when there is none, so a worker whose connections are all idle stops or resumes
listening within that time of the others' counts moving. A worker that exits
frees its row; one that stops updating its row for `STALE` seconds (dead, or its loop stuck)
is ignored by the others.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

ROWS = 64  # workers balanced per master; beyond that a worker just accepts, as gthread does
STALE = 2.0  # seconds without an update after which a row is ignored
_STALE_NS = int(STALE * 1e9)
IDLE_POLL = 0.02  # seconds between looks at the table of a worker that is not listening
LISTENING_POLL = 0.1  # ... of one that is (gthread's own loop would wait up to 1 s)
_FREE = -1  # the count of a row no worker holds
_ASIDE = 2**62  # the count of a worker starting or stopping: never the lowest


class ConnectionTable:
    """Per worker, its open connections and when it last said so (monotonic ns), in memory
    that a gunicorn master maps before forking and so shares with every worker it forks.

    Cell 0 holds how many rows have ever been claimed; row r is cells 1 + 2r (the count,
    `_FREE` if nobody holds the row) and 2 + 2r (the time)."""

    def __init__(self, rows: int = ROWS, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._map = mmap.mmap(-1, (1 + 2 * rows) * 8)  # anonymous and shared: survives fork()
        self._cells = memoryview(self._map).cast("q")
        self.rows = rows
        self._clock = clock
        for row in range(rows):
            self._cells[1 + 2 * row] = _FREE

    def claim(self) -> int | None:
        """A free row (in the master, which is single-threaded), or None if all are taken.

        A row is free until claimed and again once released: a stale row may belong to a
        worker whose loop is only slow, so it is never handed to another."""
        cells = self._cells
        for row in range(self.rows):
            if cells[1 + 2 * row] == _FREE:
                self.publish(row, _ASIDE)
                cells[0] = max(cells[0], row + 1)
                return row
        return None

    def publish(self, row: int, count: int) -> None:
        self._cells[2 + 2 * row] = self._clock()
        self._cells[1 + 2 * row] = count

    def release(self, row: int) -> None:
        self._cells[1 + 2 * row] = _FREE

    def fewest_elsewhere(self, row: int) -> int | None:
        """The lowest count among the other workers' live rows, None if there is none."""
        cells = self._cells
        fresh = self._clock() - _STALE_NS
        lowest = None
        for other in range(cells[0]):
            count = cells[1 + 2 * other]
            if other == row or count == _FREE or cells[2 + 2 * other] < fresh:
                continue
            if lowest is None or count < lowest:
                lowest = count
        return lowest


class BalancedThreadWorker(ThreadWorker):
    """gthread, accepting only while this worker has no more connections than any other."""

    _table: ConnectionTable | None = None  # made in the master by its first worker

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Runs in the master, before the fork: the table is made there, once, and inherited.
        if BalancedThreadWorker._table is None:
            BalancedThreadWorker._table = ConnectionTable()
        self._row = BalancedThreadWorker._table.claim()
        super().__init__(*args, **kwargs)

    # gthread's loop decides to accept with `self.nr_conns < self.worker_connections`, once per
    # pass; the limit it reads is this worker's count whenever another worker has fewer.
    @property
    def worker_connections(self) -> int:
        limit: int = self._connection_limit
        table, row = BalancedThreadWorker._table, self._row
        if table is None or row is None:
            return limit
        table.publish(row, self.nr_conns)
        fewest = table.fewest_elsewhere(row)
        if fewest is not None and self.nr_conns > fewest:
            return self.nr_conns
        return limit

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._connection_limit = value

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        table, row = BalancedThreadWorker._table, self._row
        if not self.alive and table is not None and row is not None:
            table.publish(row, _ASIDE)  # stopping: the others take the new connections

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # gthread looks again after each event; a worker whose connections are all idle would
        # otherwise keep listening (or not) for up to a second after the others' counts moved.
        poll = LISTENING_POLL if self._accepting else IDLE_POLL
        super().wait_for_and_dispatch_events(min(timeout, poll))

    def free_row(self) -> None:
        """Give this worker's row back (the master, when the worker has exited)."""
        if BalancedThreadWorker._table is not None and self._row is not None:
            BalancedThreadWorker._table.release(self._row)
            self._row = None


def worker_exited(worker: Any) -> None:
    """gunicorn's child_exit hook calls this in the master for every worker that ends."""
    if isinstance(worker, BalancedThreadWorker):
        worker.free_row()
