"""The whole ingest with a stand-in GPU that encodes at a set rate. Run by hand:

    .venv/bin/python benchmarks/paced.py --sentences .gpu/sentences.txt [--rate 61000]
        [--rounds 4] [--repo PATH]

The issue's target compares the ingest with the bare forward pass of the model (61k
sentences/s on an H200, runs 6-9). This runs the ingest of the file (read, dedup, SQL, the
Edge writer process, marking) with an encoder that works apart from the ingest, one call at
a time, at ``--rate`` sentences/s (a thread that sleeps, as the ingest waits on the encoder
process), so it shows what share of a perfect encoder's rate the rest of the ingest lets
through on this machine: the pipeline's filling and draining included. It prints the rate,
the time until the first batch was stored with its vectors, and how long each stage worked.

``--rate`` may be several rates (``--rate 30000 61000``), each timed once a round, in turn,
in fresh homes; the median of the rounds counts. ``--repo`` runs another checkout's
``bitextdb`` (to compare two versions of the storage stages).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS: Any = None  # common.FullCollections, made in main (after --repo)


def paced_encoder(name: str, dim: int, rate: float):  # type: ignore[no-untyped-def]
    """The storage benchmark's stand-in encoder, made to take ``count / rate`` seconds a
    call, one call at a time, in a thread of its own (imported here, after ``--repo``)."""
    from common import InstantEncoder

    class PacedEncoder(InstantEncoder):
        def __init__(self) -> None:
            super().__init__(name, dim)
            self.worker = ThreadPoolExecutor(1)

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            return self.start(texts)()

        def start(self, texts: Sequence[str]) -> Callable[[], np.ndarray]:
            def work() -> np.ndarray:
                time.sleep(len(texts) / rate)
                return super(PacedEncoder, self).encode(texts)

            return self.worker.submit(work).result

        def close(self) -> None:
            self.worker.shutdown()

    return PacedEncoder()


def ingest_once(text: Path, model: Path, home: Path, rate: float) -> dict:
    """Ingest ``text`` into a fresh ``home`` with the encoder paced at ``rate``."""
    import bitextdb

    firsts: list[float] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "ingest":
            firsts.append(time.perf_counter())

    db = bitextdb.init(home, model=str(model), device="cpu", index_process=True, progress=progress)
    db._encoder = paced_encoder(str(model), 768, rate)  # type: ignore[assignment]
    COLLECTIONS.reset()
    started = time.perf_counter()
    result = db.ingest(str(text), "en", mine=False)
    took = time.perf_counter() - started
    full = COLLECTIONS.seconds
    db.close()
    report = result["ingested"][0]
    return {
        "per_s": report["new"] / took,
        "first_batch_s": firsts[0] - started,
        "stages": report["stage_seconds"],
        "full_collections": full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--size", type=int, default=60_000)
    parser.add_argument("--rate", type=float, nargs="+", default=[61_000.0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repo", type=Path, default=ROOT)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    sys.path.insert(1, str(ROOT / "benchmarks"))
    sys.path.insert(2, str(ROOT))
    from common import FullCollections, machine

    global COLLECTIONS
    COLLECTIONS = FullCollections()  # this process's, during each ingest
    import bitextdb
    from tests.models import build_tiny_bert

    print(machine())
    print(f"bitextdb from {Path(bitextdb.__file__).parent}")
    bitextdb.tune_allocator()  # as the command line does
    lines = Path(args.sentences).read_text(encoding="utf-8").splitlines()[: args.size]
    results: dict[float, list[dict]] = {rate: [] for rate in args.rate}
    scratch = Path(tempfile.mkdtemp(prefix="bitextdb-paced-"))
    try:
        text = scratch / "corpus.txt"
        text.write_text("\n".join(lines) + "\n", encoding="utf-8")
        model = build_tiny_bert(scratch / "model", dim=768)
        for round_ in range(args.rounds):
            for rate in args.rate:
                home = scratch / f"home-{round_}-{rate:.0f}"
                got = ingest_once(text, model, home, rate)
                shutil.rmtree(home, ignore_errors=True)
                results[rate].append(got)
                stages = ", ".join(f"{k} {v:.2f}" for k, v in got["stages"].items())
                print(
                    f"round {round_ + 1}, encoder at {rate:,.0f}/s: ingest {got['per_s']:,.0f}/s, "
                    f"first batch stored after {got['first_batch_s']:.2f} s; full collections "
                    f"{len(got['full_collections'])} "
                    f"({sum(got['full_collections']) * 1000:.0f} ms); stages worked: {stages}"
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{len(lines):,} sentences, {args.rounds} rounds, median (best):")
    for rate, runs in results.items():
        rates = [r["per_s"] for r in runs]
        median = statistics.median(rates)
        print(
            f"encoder paced at {rate:8,.0f}/s: ingest {median:8,.0f}/s = {median / rate:4.0%} of "
            f"the encoder (best {max(rates):,.0f}/s = {max(rates) / rate:.0%})"
        )


if __name__ == "__main__":
    main()
