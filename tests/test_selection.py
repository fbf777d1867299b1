"""The incremental selection equals a greedy walk over everything."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import bitextdb
from bitextdb.db import graph
from bitextdb.margin import greedy_one_to_one
from bitextdb.selection import Key, reselect


def _walk(table: dict[Key, float]) -> dict[Key, bool]:
    keys = sorted(table)
    if not keys:
        return {}
    src = np.array([k[0] for k in keys])
    tgt = np.array([k[1] for k in keys])
    accepted = greedy_one_to_one(src, tgt, np.array([table[k] for k in keys]))
    return dict(zip(keys, accepted.tolist()))


class _Store:
    """A pairs table the loader reads, counting what it was asked for."""

    def __init__(self, table: dict[Key, float], flags: dict[Key, bool]) -> None:
        self.table, self.flags = table, flags
        self.asked = 0

    def load(self, srcs: list[int], tgts: list[int]):  # type: ignore[no-untyped-def]
        self.asked += len(srcs) + len(tgts)
        wanted_src, wanted_tgt = set(srcs), set(tgts)
        for key, margin in self.table.items():
            if key[0] in wanted_src or key[1] in wanted_tgt:
                yield key[0], key[1], margin, self.flags[key]


def _random_table(rng: random.Random, n: int, ids: int, margins: list[float]) -> dict[Key, float]:
    return {(rng.randrange(ids), rng.randrange(ids)): rng.choice(margins) for _ in range(n)}


@pytest.mark.parametrize("seed", range(300))
def test_reselect_after_random_changes_equals_the_walk_over_everything(seed: int) -> None:
    rng = random.Random(seed)
    ids = rng.choice([5, 20, 200])
    # few distinct margins: ties broken by (src, tgt) are common
    margins = [round(rng.uniform(0.9, 1.5), 1) for _ in range(rng.choice([3, 50]))]
    table = _random_table(rng, rng.randrange(1, 120), ids, margins)
    flags = _walk(table)
    new = dict(table)
    changed: set[Key] = set()
    for _ in range(rng.randrange(1, 8)):
        what = rng.random()
        if what < 0.4 or not new:
            key = (rng.randrange(ids), rng.randrange(ids))
            new[key] = rng.choice(margins)
        elif what < 0.7:
            key = rng.choice(sorted(new))
            del new[key]
        else:
            key = rng.choice(sorted(new))
            new[key] = rng.choice(margins)
        changed.add(key)
    stored = {key: flags.get(key, False) for key in new}
    flips = reselect(changed, _Store(new, stored).load, limit=10_000)
    assert flips is not None
    assert all(stored[key] != flag for key, flag in flips.items())
    stored.update(flips)
    assert stored == _walk(new)


def test_reselect_with_nothing_changed_flips_nothing() -> None:
    table = _random_table(random.Random(1), 50, 10, [1.0, 1.1, 1.2])
    store = _Store(table, _walk(table))
    assert reselect([], store.load, limit=10) == {}


def test_reselect_reads_only_around_the_change() -> None:
    # 1,000 disjoint pairs, each accepted; a new rival of one of them touches two sentences
    table = {(i, i): 1.0 + i / 10_000 for i in range(1000)}
    table[(5, 7)] = 2.0
    stored = {key: key != (5, 7) for key in table}
    store = _Store(table, stored)
    flips = reselect([(5, 7)], store.load, limit=100)
    assert flips == {(5, 7): True, (5, 5): False, (7, 7): False}
    assert store.asked < 10
    stored.update(flips)
    assert stored == _walk(table)


def test_reselect_gives_up_past_its_limit() -> None:
    # a chain: each new acceptance displaces the next pair down, which frees the next
    n = 50
    table = {(i, i): 2.0 - i / 100 for i in range(n)}
    table.update({(i, i + 1): 2.0 - i / 100 - 0.005 for i in range(n - 1)})
    flags = _walk(table)
    del table[(0, 0)]
    stored = {key: flags[key] for key in table}
    assert reselect([(0, 0)], _Store(table, stored).load, limit=10) is None
    flips = reselect([(0, 0)], _Store(table, stored).load, limit=1000)
    assert flips is not None and len(flips) == 2 * n - 2
    stored.update(flips)
    assert stored == _walk(table)


# -- in the miner ------------------------------------------------------------------------------


def _flags_off_the_walk(db: bitextdb.BitextDB, a: str, b: str) -> int:
    with db.db.session() as s:
        src, tgt, margin, accepted = graph.load_selection(s, a, b)
    return int((greedy_one_to_one(src, tgt, margin) != accepted).sum())


def test_a_database_from_before_the_notes_is_walked_once(home: Path) -> None:
    """Flags that are no walk's, left by a version that healed them at every mine (a
    removal stopped before its refresh), must not be followed: a pair without the note
    that its flags are a walk's is walked whole."""
    from sqlalchemy import text

    db = bitextdb.init(home, model="synthetic", dim=4, k=2)
    try:
        rng = np.random.default_rng(5)
        vectors = rng.standard_normal((40, 4)).astype(np.float32)
        db.ingest_embeddings("xa", [f"a {i}" for i in range(20)], vectors[:20])
        db.ingest_embeddings("xb", [f"b {i}" for i in range(20)], vectors[20:])
        with db.db.session() as s:
            s.execute(text("UPDATE pairs SET accepted = NOT accepted"))
            s.execute(text("DELETE FROM settings WHERE key LIKE 'selection_walked:%'"))
        assert _flags_off_the_walk(db, "xa", "xb") > 0
        db.mine()
        assert _flags_off_the_walk(db, "xa", "xb") == 0
        db.ingest_embeddings("xa", ["a new"], vectors[:1] + 0.01)  # followed from now on
        assert _flags_off_the_walk(db, "xa", "xb") == 0
    finally:
        db.close()


def test_a_pair_that_loses_both_flags_at_once_is_withdrawn_once(home: Path) -> None:
    """Listed among the changed pairs once per side, its withdrawal was recorded twice."""
    from sqlalchemy import text

    rng = random.Random(27)
    pool = np.random.default_rng(27).normal(size=(rng.choice([6, 20, 500]), 4))
    pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)
    db = bitextdb.init(home, model="synthetic", dim=4, k=rng.randint(1, 3))
    try:
        count = 0
        for step in range(3):
            lang = rng.choice(["xa", "xb"])
            n = rng.randint(1, 5) if step > 1 else 20
            rows = pool[[rng.randrange(len(pool)) for _ in range(n)]]
            db.ingest_embeddings(lang, [f"{lang} {count + i}" for i in range(n)], rows,
                                 source=f"s{step}")  # fmt: skip
            count += n
        with db.db.session() as s:
            grouped = "GROUP BY src_id, tgt_id, withdrawn_at"
            records = s.execute(
                text(
                    f"SELECT src_id, tgt_id, withdrawn_at, count(*) FROM withdrawn_pairs {grouped}"
                )
            ).all()
        assert records, "the case this test is about did not happen"
        assert all(row[3] == 1 for row in records), records
    finally:
        db.close()
