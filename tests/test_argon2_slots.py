"""ARGON2_CONCURRENCY: at most that many argon2 runs at once on the host, among the threads
of one process and across processes (real flocks, real argon2), never a failed request
because of the limit, and no limit at all with 0."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from authsvc.config import ConfigError, load_settings
from authsvc.security.passwords import ArgonSlots, Passwords
from conftest import PASSWORD, ROOT

# Enough memory that a run lasts a few milliseconds, so that runs can meet.
ARGON2 = {"memory_cost": 4096, "time_cost": 1, "parallelism": 1}


class InsideArgon2:
    """An argon2 hasher that counts the runs inside it at each moment; given to Passwords."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher(**ARGON2)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.now = self.most = self.runs = 0

    def _inside(self, method: str, *args: Any) -> Any:
        with self._lock:
            self.now += 1
            self.runs += 1
            self.most = max(self.most, self.now)
        try:
            return getattr(self._hasher, method)(*args)
        finally:
            with self._lock:
                self.now -= 1

    def hash(self, password: str) -> str:
        return self._inside("hash", password)

    def verify(self, password_hash: str, password: str) -> bool:
        return self._inside("verify", password_hash, password)


def watched(**settings: Any) -> tuple[Passwords, InsideArgon2]:
    """Passwords whose argon2 runs are counted (from after its own start-up hash)."""
    inside = InsideArgon2()
    passwords = Passwords(**ARGON2, hasher=inside, **settings)
    inside.reset()
    return passwords, inside


def run_threads(count: int, action: Any) -> None:
    """Run `action(i)` in `count` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            action(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if failures:
        raise failures[0]


def sign_in_and_up(passwords: Passwords, i: int) -> None:
    """Hash, verify right and wrong, and verify for an unknown email (the dummy hash)."""
    stored = passwords.hash(f"{PASSWORD} {i}")
    assert passwords.verify(stored, f"{PASSWORD} {i}")
    assert not passwords.verify(stored, "wrong password")
    assert not passwords.verify(None, f"{PASSWORD} {i}")


@pytest.fixture
def slot_dir(tmp_path: Path) -> Path:
    return tmp_path / "argon2-slots"


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """Warnings of authsvc.passwords (the authsvc logger does not propagate to caplog)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("authsvc.passwords")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_threads_never_run_more_than_the_limit_at_once(slot_dir):
    passwords, inside = watched(concurrency=2, slot_dir=slot_dir)
    run_threads(12, lambda i: sign_in_and_up(passwords, i))
    assert inside.runs == 12 * 4
    assert inside.most == 2  # never more, and both slots were used
    assert sorted(p.name for p in slot_dir.iterdir()) == ["queue", "slot-0", "slot-1"]
    assert slot_dir.stat().st_mode & 0o777 == 0o700


def test_apps_in_one_process_share_the_slots(slot_dir):
    (first, first_inside), (second, second_inside) = (
        watched(concurrency=1, slot_dir=slot_dir),
        watched(concurrency=1, slot_dir=slot_dir),
    )
    inside = [first_inside, second_inside]
    both_at_once = threading.Lock()
    most_together = 0

    def count(i: int) -> None:
        nonlocal most_together
        sign_in_and_up(first if i % 2 else second, i)
        with both_at_once:
            most_together = max(most_together, inside[0].now + inside[1].now)

    run_threads(8, count)
    assert inside[0].most == inside[1].most == 1
    assert most_together <= 1


# A worker process: hashes and verifies with the given limit, recording when each argon2
# run starts and ends (CLOCK_MONOTONIC is one clock for every process of the host).
WORKER = """
import json, sys, time
from pathlib import Path
from argon2 import PasswordHasher
from authsvc.security.passwords import Passwords

slot_dir, concurrency, start_at, out = sys.argv[1:]
hasher, intervals = PasswordHasher(memory_cost=4096, time_cost=1, parallelism=1), []

class Recording:
    def hash(self, *args):
        return self._run(hasher.hash, args)
    def verify(self, *args):
        return self._run(hasher.verify, args)
    def _run(self, method, args):
        started = time.monotonic()
        try:
            return method(*args)
        finally:
            intervals.append((started, time.monotonic()))

passwords = Passwords(
    4096, 1, 1, concurrency=int(concurrency), slot_dir=Path(slot_dir), hasher=Recording()
)
intervals.clear()  # its start-up hash
time.sleep(max(0.0, float(start_at) - time.monotonic()))
for i in range(6):
    stored = passwords.hash(f"password {i}")
    assert passwords.verify(stored, f"password {i}")
    assert not passwords.verify(None, f"password {i}")
Path(out).write_text(json.dumps(intervals))
"""


def argon2_intervals_of_processes(slot_dir: Path, concurrency: int, count: int) -> list:
    """Start `count` worker processes together; return all their argon2 runs' intervals."""
    start_at = time.monotonic() + 1.5  # after every worker has imported authsvc
    outputs = [slot_dir.parent / f"intervals-{i}.json" for i in range(count)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(slot_dir), str(concurrency), str(start_at), out],
            cwd=ROOT,
        )
        for out in map(str, outputs)
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    return sorted(tuple(run) for out in outputs for run in json.loads(out.read_text()))


def most_at_once(intervals: list) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_processes_never_run_more_than_the_limit_at_once(slot_dir):
    intervals = argon2_intervals_of_processes(slot_dir, concurrency=1, count=4)
    assert len(intervals) == 4 * 6 * 3
    assert most_at_once(intervals) == 1


@pytest.mark.slow
def test_processes_without_a_limit_do_run_together(slot_dir):
    # The check above can see overlap: the same workers unlimited do run at the same time.
    intervals = argon2_intervals_of_processes(slot_dir, concurrency=0, count=4)
    assert most_at_once(intervals) > 1
    assert not slot_dir.exists()


def hold(slots: ArgonSlots, inside: threading.Event, leave: threading.Event) -> threading.Thread:
    def run() -> None:
        with slots:
            inside.set()
            leave.wait(timeout=30)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_next_in_line_waits_for_the_slot_taken_first(slot_dir):
    slots = ArgonSlots(slot_dir, 2)
    events = {name: (threading.Event(), threading.Event()) for name in ("old", "new", "next")}
    threads = [hold(slots, *events["old"])]
    assert events["old"][0].wait(timeout=5)
    time.sleep(0.05)
    threads.append(hold(slots, *events["new"]))
    assert events["new"][0].wait(timeout=5)

    threads.append(hold(slots, *events["next"]))
    assert not events["next"][0].wait(timeout=0.3)  # both slots are taken
    events["old"][1].set()
    # It gets the slot that came free while the newer holder keeps its own.
    assert events["next"][0].wait(timeout=5)
    for _, leave in events.values():
        leave.set()
    for thread in threads:
        thread.join(timeout=30)


HOLDER = """
import sys, time
from pathlib import Path
from authsvc.security.passwords import ArgonSlots

with ArgonSlots(Path(sys.argv[1]), 1):
    print("holding", flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_a_killed_holder_frees_its_slot(slot_dir):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(slot_dir)], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"holding\n"
        inside, leave = threading.Event(), threading.Event()
        waiter = hold(ArgonSlots(slot_dir, 1), inside, leave)
        assert not inside.wait(timeout=0.3)
        holder.kill()
        assert inside.wait(timeout=10)
        leave.set()
        waiter.join(timeout=30)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_zero_means_no_limit(slot_dir):
    all_inside = threading.Barrier(6, timeout=30)

    class WaitForAll:
        armed = False

        def hash(self, password: str) -> str:
            if self.armed:
                all_inside.wait()  # would time out if fewer than 6 could be inside at once
            return "$argon2id$"

    hasher = WaitForAll()
    passwords = Passwords(**ARGON2, concurrency=0, slot_dir=slot_dir, hasher=hasher)
    hasher.armed = True
    run_threads(6, lambda i: passwords.hash(PASSWORD))
    assert not slot_dir.exists()


def test_an_unusable_directory_limits_per_process(tmp_path, warnings_logged):
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    passwords, inside = watched(concurrency=2, slot_dir=not_a_directory / "argon2-slots")
    run_threads(8, lambda i: sign_in_and_up(passwords, i))
    assert inside.most == 2
    assert len(warnings_logged) == 1
    assert "argon2" in warnings_logged[0]


def test_slots_lost_after_the_start_never_fail_a_run(slot_dir, warnings_logged):
    passwords, inside = watched(concurrency=2, slot_dir=slot_dir)
    shutil.rmtree(slot_dir)  # new threads cannot open the slot files any more
    run_threads(8, lambda i: sign_in_and_up(passwords, i))
    assert inside.most <= 2
    assert len(warnings_logged) == 1


def test_setting_defaults_to_the_usable_cpus_and_rejects_negatives():
    default = load_settings(environ={}).ARGON2_CONCURRENCY
    assert default == len(os.sched_getaffinity(0))
    assert load_settings(environ={"ARGON2_CONCURRENCY": "0"}).ARGON2_CONCURRENCY == 0
    for wrong in ("-1", "1025"):
        with pytest.raises(ConfigError, match="ARGON2_CONCURRENCY must be 0"):
            load_settings(environ={"ARGON2_CONCURRENCY": wrong})


def test_login_and_register_take_their_turns(make_app, instance_path):
    client = make_app(ARGON2_CONCURRENCY=1).test_client()
    credentials = {"email": "turns@example.com", "password": PASSWORD}
    assert client.post("/api/auth/register", json=credentials).status_code == 201
    assert client.post("/api/auth/login", json=credentials).status_code == 200
    wrong = {**credentials, "password": "not the password at all"}
    assert client.post("/api/auth/login", json=wrong).status_code == 401
    assert (instance_path / "argon2-slots" / "slot-0").exists()
