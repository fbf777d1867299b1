"""Removal benchmark: taking a 1 % source out again, against mining what remains afresh.

    .venv/bin/python benchmarks/remove.py                   # 50k x 50k, dim 768, remove 1 %

Side A is two sources, a large one and a small one (``--share`` of A, default 1 %), side B
one source; vectors are planted pairs, injected through ``BitextDB.ingest_embeddings``. The
database is mined, then the small source is removed (``BitextDB.remove``). The baseline is
what every batch tool does instead: a fresh database holding what remains, mined from
scratch (the ingest of injected vectors is timed apart, as it stands for re-encoding, which
a real rebuild would pay on top). The accepted pairs after the removal must equal the
baseline's, matched by sentence text.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Stopwatch,
    agreement,
    corpus_arguments,
    machine,
    peak_rss_mb,
    planted,
    seconds_to_mine,
)

import bitextdb
from bitextdb.db import graph
from bitextdb.export import iter_records

say = functools.partial(print, flush=True)


def load(db: bitextdb.BitextDB, lang: str, source: str, vecs, lo: int, hi: int) -> None:  # type: ignore[no-untyped-def]
    for start in range(lo, hi, 20_000):
        stop = min(hi, start + 20_000)
        texts = [f"{lang} row {i}" for i in range(start, stop)]
        db.ingest_embeddings(lang, texts, vecs[start:stop], source=source, mine=False)


def accepted_texts(db: bitextdb.BitextDB) -> set[tuple[str, str]]:
    """Every accepted pair, as texts (the export's records, whatever their margin)."""
    return {(r["src"], r["tgt"]) for r in iter_records(db, "xa-xb", min_score=-np.inf)}


def build(root: Path, a, b, small: int, with_small: bool, k: int, dim: int) -> tuple:  # type: ignore[no-untyped-def]
    """A database of A (and its small source) and B; seconds to ingest and to mine."""
    home = root / ("full" if with_small else "rest")
    bitextdb.init(home, model="synthetic", dim=dim, k=k).close()
    db = bitextdb.open(home, progress=None)
    started = time.perf_counter()
    load(db, "xa", "a-bulk", a, 0, len(a) - small)
    if with_small:
        load(db, "xa", "a-small", a, len(a) - small, len(a))
    load(db, "xb", "b", b, 0, len(b))
    ingested = time.perf_counter() - started
    return db, ingested, seconds_to_mine(db)


def main() -> None:
    parser = corpus_arguments(
        __doc__.splitlines()[0], size=50_000, dim=768, share="the removed source's share"
    )
    args = parser.parse_args()
    n, small = args.size, max(1, int(args.size * args.share))
    say(f"machine: {machine()}")
    say(f"{n:,} x {n:,}, dim {args.dim}, k {args.k}; removing a source of {small:,} from xa")
    a, b, _ = planted(n, n, n // 2, args.dim, noise=0.6, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db, ingested, mined = build(root, a, b, small, True, args.k, args.dim)
        say(f"full database: ingest {ingested:.2f} s, first mine {mined:.2f} s")
        watch = Stopwatch(graph, ["withdraw_pairs", "withdraw_orphans", "withdraw_sentences"])
        started = time.perf_counter()
        report = db.remove("xa", "a-small")
        removed = time.perf_counter() - started
        (pair,) = report["pairs"]
        say(
            f"remove: {removed:.2f} s ({report['sentences_removed']:,} sentences, "
            f"{pair['changed_lists']:,} lists searched again, "
            f"{pair['candidates_recomputed']:,} candidates recomputed; "
            f"{watch.seconds:.3f} s of it recording withdrawn pairs)"
        )
        after_removal = accepted_texts(db)
        assert db.check().ok
        db.close()

        fresh, fresh_ingest, fresh_mine = build(root, a, b, small, False, args.k, args.dim)
        baseline = accepted_texts(fresh)
        fresh.close()
        say(
            f"baseline, what remains in a fresh database: ingest {fresh_ingest:.2f} s, "
            f"mine {fresh_mine:.2f} s"
        )
    say(
        f"**remove / fresh mine: {removed / fresh_mine:.3f}** "
        f"({removed / (fresh_ingest + fresh_mine):.3f} of ingest + mine)"
    )
    say(
        f"accepted pairs equal to the fresh database's: {agreement(after_removal, baseline):.2%} "
        f"of {len(baseline):,}"
    )
    say(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
