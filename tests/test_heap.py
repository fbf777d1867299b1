"""Full collections skip what was loaded before an ingest (bitextdb.heap)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

import bitextdb
from bitextdb.heap import loaded_objects_frozen


class _Node:
    """A container the cycle collector tracks; one that refers to itself is freed only
    by a collection."""

    def __init__(self) -> None:
        self.me = self


def test_the_block_freezes_what_exists_and_gives_it_back() -> None:
    assert gc.get_freeze_count() == 0
    node = _Node()
    alive = weakref.ref(node)
    with loaded_objects_frozen():
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: a collection does not walk it
        made_inside = _Node()
        inside = weakref.ref(made_inside)
        del made_inside
        gc.collect()
        assert inside() is None  # what the block makes is collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None  # given back, and collected


def test_an_error_in_the_block_still_gives_the_objects_back() -> None:
    with pytest.raises(RuntimeError), loaded_objects_frozen():
        raise RuntimeError("stop")
    assert gc.get_freeze_count() == 0


def test_a_freeze_made_outside_is_left_alone() -> None:
    """Neither frozen again nor unfrozen: not this block's to undo. (The freeze count itself
    may fall meanwhile, as frozen objects die, so the calls are watched instead.)"""
    calls: list[str] = []
    gc.freeze()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gc, "freeze", lambda: calls.append("freeze"))
            patch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
            with loaded_objects_frozen():
                _Node()
            assert calls == []
        assert gc.get_freeze_count() > 0  # still frozen
    finally:
        gc.unfreeze()


def test_an_ingest_runs_with_the_loaded_objects_frozen(home: Path) -> None:
    seen: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "ingest":
            seen.append(gc.get_freeze_count())

    db = bitextdb.init(home / "db", model="unused", dim=4, progress=progress)
    try:
        texts = [f"sentence number {i}" for i in range(20)]
        vectors = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
        db.ingest_embeddings("en", texts, vectors, mine=False)
    finally:
        db.close()
    assert seen and all(count > 0 for count in seen)
    assert gc.get_freeze_count() == 0
