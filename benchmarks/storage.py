"""The storage stages of an ingest alone: what a GPU ingest leaves to the CPU. Run by hand:

    .venv/bin/python benchmarks/storage.py [--sentences .gpu/sentences.txt] [--dim 768]
        [--db postgresql+psycopg://postgres@127.0.0.1:5432/test]

Ingests a text file through the whole pipeline (read, normalise, dedup, SQL, upsert into
Qdrant Edge, mark indexed) with an encoder that hands back ready vectors at once, so the
rate is the ceiling any model's ingest can reach on this machine. Prints the rate and each
stage's own CPU time (thread time, so waits for the interpreter lock are not counted), the
sum of which, when one core's worth of Python does it all, bounds the rate. (Qdrant Edge's
``update`` keeps the interpreter lock while it stores points, so the upserts count too.)

Runs twice, in fresh homes: with the upserts in the ingesting process and with them in the
Edge writer process (``--index-process``), whose CPU time is counted apart. On a machine
with two cores the two processes share them, so there the wall-clock rates compare less
well than the CPU seconds each process spends per sentence, which bound the rate on a
machine with cores to spare (a GPU server).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import InstantEncoder, machine  # noqa: E402
from ingest import sentences as synthetic_sentences  # noqa: E402

import bitextdb  # noqa: E402
import bitextdb.db.corpus as corpus  # noqa: E402
import bitextdb.ingest as ingest  # noqa: E402
from bitextdb.vectors.edge import EdgeIndex  # noqa: E402
from tests.crash_helpers import pg_schema  # noqa: E402
from tests.models import build_tiny_bert  # noqa: E402

THREAD_TIME: collections.Counter[str] = collections.Counter()


def timed(owner: Any, name: str, label: str) -> None:
    """Add ``owner.name``'s thread time to ``THREAD_TIME[label]`` on every call."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            THREAD_TIME[label] += time.thread_time() - started

    setattr(owner, name, wrapper)


def point_building(dim: int, n: int = 8192) -> None:
    """How long handing Qdrant Edge ``n`` vectors takes: lists of Python floats (the old
    way) against ``array.array`` over each row's bytes (what ``EdgeIndex.upsert`` does)."""
    import array

    import qdrant_edge as qe

    rows = InstantEncoder("", dim).pool[:n]
    lists = arrays = float("inf")
    for _ in range(3):  # alternating, best of three: the first pass also grows the heap
        started = time.perf_counter()
        [qe.Point(i, row) for i, row in enumerate(rows.tolist())]
        lists = min(lists, time.perf_counter() - started)
        started = time.perf_counter()
        [qe.Point(i, array.array("f", row.tobytes())) for i, row in enumerate(rows)]  # type: ignore[arg-type]
        arrays = min(arrays, time.perf_counter() - started)
    print(
        f"{n:,} points of dim {dim}: lists {lists:.3f} s, array.array {arrays:.3f} s "
        f"({lists / arrays:.1f}x)"
    )


def write_ahead_log_or_flush(dim: int, n: int = 8192) -> None:
    """How long Qdrant Edge stores ``n`` points in a shard with a write-ahead log (as shards
    were made before) and in one without, which ``EdgeIndex`` then flushes (as it makes
    them now); best of three batches each."""
    import array

    import qdrant_edge as qe

    rows = InstantEncoder("", dim).pool[:n]
    work = Path(tempfile.mkdtemp(prefix="bitextdb-wal-"))
    config = EdgeIndex(work)._config(dim)  # the index's own settings, the log aside
    try:
        for logged in (True, False):
            shard = qe.EdgeShard.create(
                str(work / f"shard-{logged}"),
                qe.EdgeConfig(
                    vectors=config.vectors[""],
                    optimizers=config.optimizers,
                    wal_enabled=None if logged else False,
                ),
            )
            update = flush = float("inf")
            for batch in range(3):
                points = [
                    qe.Point(batch * n + i, array.array("f", r.tobytes()))  # type: ignore[arg-type]
                    for i, r in enumerate(rows)
                ]
                started = time.perf_counter()
                shard.update(qe.UpdateOperation.upsert_points(points))
                update = min(update, time.perf_counter() - started)
                started = time.perf_counter()
                if not logged:
                    shard.flush()
                flush = min(flush, time.perf_counter() - started)
            shard.close()
            how = "with a write-ahead log" if logged else f"without a log, + flush {flush:.3f} s"
            print(f"Edge stores {n:,} points of dim {dim} {how}: update {update:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sentences(path: str | None, size: int) -> list[str]:
    """The file's first ``size`` lines, or the ingest benchmark's synthetic sentences."""
    if path:
        return Path(path).read_text(encoding="utf-8").splitlines()[:size]
    return synthetic_sentences(size)


def edge_update_holds_the_lock(dim: int, n: int = 8192) -> None:
    """How fast a pure-Python thread runs while Qdrant Edge stores ``n`` points, against
    its speed alone: near 0 means ``update`` keeps the interpreter lock meanwhile."""
    import array
    import threading

    import qdrant_edge as qe

    work = Path(tempfile.mkdtemp(prefix="bitextdb-lock-"))
    index = EdgeIndex(work)
    try:
        index.ensure("en", dim)
        rows = InstantEncoder("", dim).pool[:n]
        points = [qe.Point(i, array.array("f", r.tobytes())) for i, r in enumerate(rows)]  # type: ignore[arg-type]
        count, stop = [0], threading.Event()

        def spin() -> None:
            while not stop.is_set():
                count[0] += 1

        def rate(seconds_of: Callable[[], None]) -> float:
            before, started = count[0], time.perf_counter()
            seconds_of()
            return (count[0] - before) / (time.perf_counter() - started)

        spinner = threading.Thread(target=spin)
        spinner.start()
        alone = rate(lambda: time.sleep(0.5))
        during = rate(lambda: index._require("en").update(qe.UpdateOperation.upsert_points(points)))
        stop.set()
        spinner.join()
        share = during / alone
        print(f"a Python thread's speed while Edge stores {n:,} points: {share:.0%} of alone")
    finally:
        index.close()
        shutil.rmtree(work, ignore_errors=True)


def ingest_once(
    lines: list[str], dim: int, work: Path, *, index_process: bool, db_url: str | None = None
) -> None:
    """Ingest ``lines`` into a fresh home under ``work`` and print the figures."""
    import resource

    THREAD_TIME.clear()
    text = work / "corpus.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = build_tiny_bert(work / "model", dim=dim)
    db = bitextdb.init(
        work / "home", db=db_url, model=str(model), device="cpu", index_process=index_process
    )
    db._encoder = InstantEncoder(str(model), dim)  # type: ignore[assignment]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu = time.perf_counter(), time.process_time()
    result = db.ingest(str(text), "en", mine=False)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the writer has exited by now
    child = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    db.close()
    new = result["ingested"][0]["new"]
    where = "in the writer process" if index_process else "in the ingesting process"
    print(f"\n-- upserts {where}: {len(lines):,} lines, {new:,} new sentences of dim {dim}")
    print(f"ingest with ready vectors: {took:.2f} s = {new / took:,.0f} sentences/s")
    print(f"ingesting process CPU time: {cpu:.2f} s ({cpu / took:.2f} cores busy on average)")
    if index_process:
        print(f"writer process CPU time: {child:.2f} s")
    busiest = max(cpu, child)
    print(
        f"busiest process: {busiest:.2f} CPU s = {new / busiest:,.0f} sentences per CPU second "
        "(one process's rate where it has a core to itself)"
    )
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result["ingested"][0]["stage_seconds"].items())
    print(f"seconds each stage worked: {stages}")
    for label, seconds in THREAD_TIME.most_common():
        print(f"  {label:42s} {seconds:6.2f} s thread time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", help="a text file, one sentence a line")
    parser.add_argument("--size", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--db", help="a PostgreSQL URL instead of SQLite (a schema each run)")
    args = parser.parse_args()
    print(machine())
    bitextdb.tune_allocator()  # as the command line does
    point_building(args.dim)
    write_ahead_log_or_flush(args.dim)
    edge_update_holds_the_lock(args.dim)
    for name in ("add_sentences", "add_occurrences", "mark_indexed"):
        timed(corpus, name, f"sql: {name}")
    timed(corpus, "known", "sql: known (also inside add_sentences)")
    timed(ingest, "text_hash", "hashing")
    timed(EdgeIndex, "upsert", "qdrant edge upsert, this process (with the mirror)")
    lines = sentences(args.sentences, args.size)
    for index_process in (False, True):
        work = Path(tempfile.mkdtemp(prefix="bitextdb-storage-"))
        try:
            with contextlib.ExitStack() as stack:
                url = None
                if args.db:  # a schema of its own for each ingest, dropped afterwards
                    url = stack.enter_context(pg_schema(args.db))
                ingest_once(lines, args.dim, work, index_process=index_process, db_url=url)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
