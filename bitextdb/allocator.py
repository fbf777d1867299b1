"""Keep glibc's heap from growing with the corpus in long ingests and mines.

glibc gives every thread that allocates a heap arena of its own (up to eight per core), and
ingest's stages run in threads: each arena keeps the freed space of the batches that passed
through it, so a long run's memory climbs with the data it has seen though the pipeline only
ever holds a few batches. Capping the arenas at two cut the anonymous memory a 1M-a-side
ingest adds by a third (696 MB against 1,078 MB in ``benchmarks/scale.py``), at the same
speed.

Not done, though it saved a little more memory: a fixed ``M_MMAP_THRESHOLD`` (mapping every
large block on its own) made torch's CPU encoding 30 % slower, every activation tensor then
costing fresh page faults.

The setting is process-wide, so the command line applies it at start-up and a Python
program may call :func:`tune_allocator` itself. ``MALLOC_ARENA_MAX`` in the environment wins.
"""

from __future__ import annotations

import ctypes
import os

ARENA_MAX = 2

_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's <malloc.h>


def tune_allocator() -> dict[str, int]:
    """Cap glibc's heap arenas at :data:`ARENA_MAX`; return what was applied.

    Returns an empty dict where glibc is not the allocator (musl, macOS, Windows) or where
    ``MALLOC_ARENA_MAX`` is already set in the environment.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library to ask, or not glibc's
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_ARENA_MAX, ARENA_MAX) != 1:
        return {}
    return {"MALLOC_ARENA_MAX": ARENA_MAX}
