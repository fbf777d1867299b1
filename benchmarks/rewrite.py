"""Rewritten-file benchmark: a file ingested again after 1 % of its lines changed, against
mining what it now holds afresh; and what comparing costs when the file did not change.

    .venv/bin/python benchmarks/rewrite.py           # 30k x 30k, dim 256, 1 % of lines changed

Side A is one text file with its vectors (``--embeddings``), side B injected through
``BitextDB.ingest_embeddings``; vectors are planted pairs. The database is mined, then:

1. the unchanged file is ingested again, alternately as shipped and with the comparison
   of old and new lines switched off (as before schema 0005, 2026-11-28), ``--repeats`` times each:
   what the comparison costs an ingest that changes nothing;
2. ``--share`` of its lines get other sentences, and the file is ingested again and mined
   (the replaced sentences are removed, the new ones mined), after a ``dry_run`` of that
   ingest, timed, whose counts must be the ingest's. The baseline is what a batch
   tool does instead: a fresh database holding the file as it is now and B, mined from
   scratch (the ingest of given vectors is timed apart, as it stands for re-encoding). The
   accepted pairs must equal the baseline's, matched by sentence text.
"""

from __future__ import annotations

import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import agreement, corpus_arguments, machine, peak_rss_mb, planted, seconds_to_mine

import bitextdb
from bitextdb import ingest
from bitextdb.export import iter_records

say = functools.partial(print, flush=True)


def write_side_a(root: Path, vectors: np.ndarray, rows: np.ndarray) -> tuple[Path, Path]:
    """The text file (a line a row of ``rows``) and its vectors."""
    path, npy = root / "a.txt", root / "a.npy"
    path.write_text("".join(f"xa row {i}\n" for i in rows), encoding="utf-8")
    np.save(npy, vectors[rows])
    return path, npy


def accepted_texts(db: bitextdb.BitextDB) -> set[tuple[str, str]]:
    return {(r["src"], r["tgt"]) for r in iter_records(db, "xa-xb", min_score=-np.inf)}


def build(home: Path, path: Path, npy: Path, b: np.ndarray, k: int, dim: int) -> tuple:  # type: ignore[no-untyped-def]
    """A database of the file and of B; seconds to ingest and to mine."""
    bitextdb.init(home, model="synthetic", dim=dim, k=k).close()
    db = bitextdb.open(home, progress=None)
    started = time.perf_counter()
    db.ingest(path, "xa", embeddings=npy, source="a", mine=False)
    for start in range(0, len(b), 20_000):
        texts = [f"xb row {i}" for i in range(start, min(len(b), start + 20_000))]
        db.ingest_embeddings("xb", texts, b[start : start + len(texts)], source="b", mine=False)
    ingested = time.perf_counter() - started
    return db, ingested, seconds_to_mine(db)


def main() -> None:
    parser = corpus_arguments(
        __doc__.splitlines()[0], size=30_000, dim=256, share="the lines that change"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, changed = args.size, max(1, int(args.size * args.share))
    say(f"machine: {machine()}")
    say(f"{n:,} x {n:,}, dim {args.dim}, k {args.k}; {changed:,} lines of xa's file change")
    a, b, _ = planted(n + changed, n, n // 2, args.dim, noise=0.6, seed=0)
    rows = np.arange(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path, npy = write_side_a(root, a, rows)
        db, ingested, mined = build(root / "full", path, npy, b, args.k, args.dim)
        say(f"database: ingest {ingested:.2f} s, first mine {mined:.2f} s")

        timings: dict[str, list[float]] = {"compared": [], "not compared": []}
        shipped = ingest._source_sync
        for _ in range(args.repeats):
            for kind in timings:
                ingest._source_sync = shipped if kind == "compared" else lambda *_: None  # type: ignore[assignment]
                started = time.perf_counter()
                db.ingest(path, "xa", embeddings=npy, source="a", mine=False)
                timings[kind].append(time.perf_counter() - started)
        ingest._source_sync = shipped
        best = {kind: min(times) for kind, times in timings.items()}
        for kind, times in timings.items():
            say(f"unchanged file again, {kind}: " + ", ".join(f"{t:.2f}" for t in times) + " s")
        say(
            f"**comparing lines: {best['compared'] / best['not compared']:.3f}x** the ingest "
            f"without (best of {args.repeats}; medians "
            f"{statistics.median(timings['compared']):.2f} / "
            f"{statistics.median(timings['not compared']):.2f} s)"
        )

        rng = np.random.default_rng(1)
        positions = np.sort(rng.choice(n, changed, replace=False))
        rows[positions] = n + np.arange(changed)  # sentences the database has not seen
        path, npy = write_side_a(root, a, rows)
        started = time.perf_counter()
        (preview,) = db.ingest(path, "xa", embeddings=npy, source="a", dry_run=True)["ingested"]
        dry = time.perf_counter() - started
        started = time.perf_counter()
        result = db.ingest(path, "xa", embeddings=npy, source="a")
        again = time.perf_counter() - started
        report = result["ingested"][0]
        relisted = sum(p["changed_lists"] for p in result["removed"])
        say(
            f"changed file again, and mined: {again:.2f} s (changed {report['changed']:,}, "
            f"dropped {report['dropped']:,}, sentences removed {report['sentences_removed']:,}, "
            f"{relisted:,} lists searched again; ingest {report['seconds']:.2f} s)"
        )
        counts = ("new", "changed", "dropped", "sentences_removed")
        same = all(preview[key] == report[key] for key in counts)
        say(f"the dry run before it: {dry:.2f} s, the same counts: {same}")
        after = accepted_texts(db)
        assert db.check().ok
        db.close()

        fresh, fresh_ingest, fresh_mine = build(root / "fresh", path, npy, b, args.k, args.dim)
        baseline = accepted_texts(fresh)
        fresh.close()
        say(
            f"baseline, the file as it is now in a fresh database: ingest {fresh_ingest:.2f} s, "
            f"mine {fresh_mine:.2f} s"
        )
    say(
        f"**changed file / fresh mine: {again / fresh_mine:.3f}** "
        f"({again / (fresh_ingest + fresh_mine):.3f} of ingest + mine)"
    )
    say(
        f"accepted pairs equal to the fresh database's: {agreement(after, baseline):.2%} "
        f"of {len(baseline):,}"
    )
    say(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
