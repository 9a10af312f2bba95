"""Password hashing (the only argon2 importer) and the NIST SP 800-63B password policy."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import unicodedata
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger("authsvc.passwords")

_STAMP = struct.Struct("d")


def normalise(password: str) -> str:
    """NFKC, as SP 800-63B asks, so one password typed on two keyboards hashes the same."""
    return unicodedata.normalize("NFKC", password)


class _ThreadFiles:
    """One thread's descriptors of the slot files, opened as needed, closed with the thread.

    flock belongs to an open file, so threads of one process exclude each other only
    through files of their own (like `_WriterQueue` in db.py)."""

    def __init__(self, paths: list[str]) -> None:
        self.pid = os.getpid()
        self._paths = paths
        self._fds: dict[int, int] = {}

    def fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            fd = self._fds[index] = os.open(self._paths[index], os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def __del__(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


class ArgonSlots:
    """At most `size` argon2 runs at once among all threads of all processes on the host
    that use `directory`: a run holds an flock on one of `size` slot files.

    A run takes any free slot. When none is free it queues on one more file, and the first
    in line waits on the slot taken longest ago (a holder stamps its slot with the time),
    the one to come free first as runs cost about the same: the kernel hands it over the
    moment it is released. A crashed process's flocks vanish with it, so a slot is never
    lost. Any OSError after the start (descriptors exhausted, directory deleted) makes that
    run take a turn of a per-process semaphore instead, with one warning.
    """

    def __init__(self, directory: Path, size: int) -> None:
        if size < 1:
            raise ValueError("ArgonSlots needs at least one slot")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._paths = [str(directory / f"slot-{i}") for i in range(size)]
        self._paths.append(str(directory / "queue"))
        # An unusable directory (read-only, not ours) shows now, not at the first login.
        os.close(os.open(self._paths[0], os.O_RDWR | os.O_CREAT, 0o600))
        self._size = size
        self._local = threading.local()
        self._fallback = threading.BoundedSemaphore(size)
        self._warned = False

    def __enter__(self) -> None:
        try:
            self._local.held = self._take()
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("argon2 slots unusable (%s); limiting this process only", exc)
            self._fallback.acquire()
            self._local.held = None

    def __exit__(self, *exc_info: object) -> None:
        held = self._local.held
        if held is None:
            self._fallback.release()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)

    def _files(self) -> _ThreadFiles:
        files = getattr(self._local, "files", None)
        if files is None or files.pid != os.getpid():  # a forked child must not share them
            files = self._local.files = _ThreadFiles(self._paths)
        return files

    def _take(self) -> int:
        """Lock a slot and return its descriptor."""
        files = self._files()
        fd = self._take_free(files)
        if fd is None:
            queue = files.fd(self._size)
            fcntl.flock(queue, fcntl.LOCK_EX)
            try:
                fd = self._take_free(files)
                if fd is None:
                    fd = files.fd(min(range(self._size), key=lambda i: _stamp(files.fd(i))))
                    fcntl.flock(fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(queue, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):  # only a hint for the next in line
            os.pwrite(fd, _STAMP.pack(time.monotonic()), 0)
        return fd

    def _take_free(self, files: _ThreadFiles) -> int | None:
        for index in range(self._size):
            fd = files.fd(index)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            return fd
        return None


def _stamp(fd: int) -> float:
    data = os.pread(fd, _STAMP.size, 0)
    return _STAMP.unpack(data)[0] if len(data) == _STAMP.size else 0.0


def argon2_turns(concurrency: int, slot_dir: Path | None) -> AbstractContextManager[Any]:
    """What an argon2 run holds: nothing if `concurrency` is 0, else one of `concurrency`
    slots shared host-wide through `slot_dir`, or per process if that cannot be used."""
    if concurrency == 0:
        return contextlib.nullcontext()
    if slot_dir is not None:
        try:
            return ArgonSlots(slot_dir, concurrency)
        except OSError as exc:
            log.warning(
                "cannot use %s for argon2 slots (%s); limiting argon2 runs per process only",
                slot_dir,
                exc,
            )
    return threading.BoundedSemaphore(concurrency)


class Passwords:
    """argon2id with configured parameters; also verifies for unknown users in equal time.

    Runs take turns: more at once than there are cores only makes each slower (the cores'
    caches and memory bandwidth are shared, threads time-slice), so at most `concurrency`
    run at once on the host (0: no limit); see `argon2_turns`.
    """

    def __init__(
        self,
        memory_cost: int,
        time_cost: int,
        parallelism: int,
        *,
        concurrency: int = 0,
        slot_dir: Path | None = None,
        hasher: Any = None,
    ) -> None:
        """`hasher` replaces argon2-cffi's PasswordHasher made from the parameters: anything
        with its `hash`, `verify` and `check_needs_rehash` (e.g. a wrapper that watches it)."""
        self._hasher = hasher or PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._turns = argon2_turns(concurrency, slot_dir)
        # Verified against when the email is unknown, so that both paths cost one argon2 run.
        with self._turns:
            self._dummy_hash = self._hasher.hash("authsvc timing equaliser")

    def hash(self, password: str) -> str:
        password = normalise(password)
        with self._turns:
            return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True if `password` matches; a None hash burns the same time and answers False."""
        password = normalise(password)
        try:
            with self._turns:
                matched = self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True unless `password_hash` was made under the current parameters."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """30,000 most common passwords, from zxcvbn's maintained frequency lists."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, email: str, min_length: int, max_length: int) -> str | None:
    """Why `password` is not acceptable for the account `email`, or None if it is."""
    password = normalise(password)
    if len(password) < min_length:
        return f"must be at least {min_length} characters"
    if len(password) > max_length:
        return f"must be at most {max_length} characters"
    lowered = password.lower()
    if lowered in common_passwords():
        return "is too common; choose one that is not on a list of common passwords"
    local_part = email.rpartition("@")[0].lower()
    # Very short local parts ("a@x.io") would forbid half the alphabet; three is the floor.
    if len(local_part) >= 3 and local_part in lowered:
        return "must not contain your email address"
    return None
