"""Keep glibc's heap from growing with the corpus in long ingests and mines.

Two glibc defaults make a long run's memory climb with the data it has passed through,
though the pipeline only ever holds a batch: every thread that allocates gets its own heap
arena (ingest's stages run in threads), and the size above which a block gets its own
mapping rises to that of any such block freed, so later batch-sized arrays come from the
heaps, where freed space is rarely given back. Pinning both (at most two arenas; blocks of
1 MiB or more always mapped, so freeing them returns the memory at once) halved the
anonymous memory of a 300k-a-side ingest in ``benchmarks/scale.py``, at the same speed.

The settings are process-wide, so the command line applies them at start-up and a Python
program may call :func:`tune_allocator` itself. ``MALLOC_ARENA_MAX`` or
``MALLOC_MMAP_THRESHOLD_`` in the environment win over the matching setting here.
"""

from __future__ import annotations

import ctypes
import os

ARENA_MAX = 2
MMAP_THRESHOLD = 1 << 20

# mallopt's parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> dict[str, int]:
    """Apply the settings above where glibc is the allocator; return those applied.

    Returns an empty dict elsewhere (musl, macOS, Windows) or where the environment already
    sets both, and a dict without the setting whose environment variable is present.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library to ask, or not glibc's
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    wanted = {
        "MALLOC_ARENA_MAX": (_M_ARENA_MAX, ARENA_MAX),
        "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    }
    applied: dict[str, int] = {}
    for variable, (parameter, value) in wanted.items():
        if variable not in os.environ and mallopt(parameter, value) == 1:
            applied[variable] = value
    return applied
