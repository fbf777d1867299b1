"""Keep Python's cycle collector off the objects a process has loaded before its busy part.

A full collection walks every container object the interpreter tracks and holds the
interpreter lock while it does. With torch, transformers and SQLAlchemy loaded that is
about 435,000 objects: 241-344 ms on the CPU VM (``benchmarks/launch.py`` and
``paced.py``). An ingest allocates enough to set one off every few batches, in the
ingesting process and in the encoder process alike, and meanwhile no other thread of that
process runs: not the ingest's stages, not the thread launching the model on the GPU (a GPU
batch takes about 20 ms).

``gc.freeze`` moves the objects tracked so far to a generation that collections skip; a
full collection then walks only what was made since (1-3 ms instead of 241-307 ms in the
encoder's case). Garbage is still collected: frozen objects are the long-lived ones, and
:func:`loaded_objects_frozen` gives them back to the collector when its block ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def freeze_loaded() -> None:
    """Freeze for good what this process has loaded (a process of bitextdb's own, such as
    the encoder process once its model is loaded)."""
    gc.freeze()


@contextmanager
def loaded_objects_frozen() -> Iterator[None]:
    """For the length of the block, collections skip the objects that exist at its start.

    Where objects are frozen already (by the program using bitextdb, or by an enclosing
    block) this leaves the freeze as it is, so it never unfreezes what it did not freeze.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
