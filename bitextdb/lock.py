"""One writer at a time on an embedded home (Qdrant Edge shards belong to one process),
and the name of the lock that serialises the writers of one language pair."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from numbers import Real
from pathlib import Path

from .config import pair_name
from .errors import BusyError, ConfigError


def mine_lock(a: str, b: str) -> str:
    """The advisory lock (PostgreSQL) held by whoever writes the pair ``a``-``b``: its miner,
    a removal touching it, and a cursor export reading it."""
    return f"bitextdb-mine-{pair_name(a, b)}"


def source_lock(lang: str, source: str) -> str:
    """The advisory lock (PostgreSQL) held by an ingest that brings the file source
    ``source`` up to date: two workers reading the same file compare it with the source
    one after the other, never both with the same old keys."""
    return f"bitextdb-source-{lang}-{source}"


def displacing_lock(lang: str) -> str:
    """The advisory lock (PostgreSQL) that ingests of changed ``lang`` files hold shared
    while they displace sentences, and that their removal holds exclusive: a sentence a
    running ingest displaced may yet come back a few lines below, so it is not removed
    before that ingest ends (see :mod:`bitextdb.source_sync`)."""
    return f"bitextdb-displacing-{lang}"


#: the writer locks this process holds: a second open of one home here would wait on
#: itself (``flock`` locks belong to the open file, not to the process)
_held: set[str] = set()
_held_guard = threading.Lock()


@contextlib.contextmanager
def writer_lock(
    path: Path, *, wait: float = 0.0, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; wait up to ``wait`` seconds, then fail clearly."""
    if isinstance(wait, bool) or not isinstance(wait, Real) or not wait >= 0:
        raise ConfigError(f"wait is a number of seconds, 0 or more, not {wait!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    with _held_guard:
        if key in _held:
            raise BusyError(
                f"This process has {path.parent} open already (a BitextDB not closed yet); "
                "use that one, or close it before opening the home again."
            )
        _held.add(key)
    try:
        with _flocked(path, wait, on_wait):
            yield
    finally:
        with _held_guard:
            _held.discard(key)


@contextlib.contextmanager
def _flocked(path: Path, wait: float, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        message = f"Waiting for another bitextdb writer on {path.parent} ..."
        if not flock_within(
            fd, fcntl.LOCK_EX, wait, on_wait=(lambda: on_wait(message)) if on_wait else None
        ):
            advice = (
                f"it did not finish within the {wait:g} s waited: try again later, or wait "
                "longer (--wait SECONDS)"
                if wait > 0
                else "wait for it to finish (or pass --wait SECONDS)"
            )
            raise BusyError(
                f"Another bitextdb process{_holder(fd)} is writing to {path.parent}; {advice}."
            )
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def flock_within(
    fd: int,
    operation: int,
    seconds: float,
    *,
    on_wait: Callable[[], None] | None = None,
    poll: float = 0.2,
) -> bool:
    """Take ``flock(fd, operation)`` (``LOCK_EX`` or ``LOCK_SH``), trying until ``seconds``
    have passed; whether it was taken. ``on_wait`` is called once, if the first try fails."""
    deadline = time.monotonic() + seconds
    told = False
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            if not told and on_wait:
                on_wait()
                told = True
            time.sleep(poll)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
        if pid:
            return f" (pid {pid})"
    return ""
