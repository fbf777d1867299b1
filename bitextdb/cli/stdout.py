"""Standard output that never drops what it was given.

A write to a pipe whose reader has gone (``... | head``) may be taken in part: the pipe
held 64 KiB, then the reader left. Python's buffered writer then reports the part as
written and raises nothing, and a text stream ignores the count, so the command went on
and exited 0 with its output cut short (an export said it had sent every pair and moved
its cursor). Here every write is finished or raises ``BrokenPipeError``, which the
command line turns into exit 141.
"""

from __future__ import annotations

import io
import os
import sys


class _WholeWrites(io.RawIOBase):
    """A raw file whose ``write`` writes every byte or raises."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        return done


def use_whole_writes() -> None:
    """Put a stream of whole writes over the process' standard output (the console
    entry point only: a program using the library keeps its own)."""
    current = sys.stdout
    try:
        fd = current.fileno()
    except (AttributeError, OSError, ValueError):  # not a file: leave it be
        return
    current.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_WholeWrites(fd)),
        encoding=current.encoding,
        errors=current.errors,
        line_buffering=current.line_buffering,
    )
