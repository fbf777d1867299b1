"""Ingest benchmark (issue 2). Run by hand:

    .venv/bin/python benchmarks/ingest.py [--size 100000]

Writes SIZE synthetic sentences to a file, ingests it with a tiny local BERT (the whole
pipeline: read, dedup, SQL, encode, upsert; no mining), and in the same run times the bare
``model.encode`` of the same sentences. Prints both rates, their ratio (target: ingest at
most 1.5x the bare encode time) and the resident memory sampled through the ingest
(target: flat, not growing with the file). Then ingests the same file with the model in a
child process of its own (``--encoder-process``, which brings Qdrant Edge's upserts into
the writer process too), and with given 768-d vectors (``--embeddings``), the storage stages
alone, the ceiling of any ingest: once with the upserts in the ingesting process and once
in the writer process (``--index-process``). The allocator is tuned as the command line
tunes it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, rss_mb  # noqa: E402

import bitextdb  # noqa: E402
from tests.models import LEXICON, build_tiny_bert  # noqa: E402


class Sampler(threading.Thread):
    """Samples RSS every 0.2 s; ``samples`` is [(seconds, MB)]."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.samples.append((time.perf_counter() - self.start_time, rss_mb()))


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [w for triple in LEXICON for w in triple]
    return [
        f"{' '.join(rng.choice(words) for _ in range(rng.randint(6, 18)))} {i}" for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--given-dim", type=int, default=768)
    parser.add_argument(
        "--model", help="a sentence-transformers model folder [default: a tiny random BERT]"
    )
    args = parser.parse_args()
    bitextdb.tune_allocator()  # as the command line does
    root = Path(tempfile.mkdtemp(prefix="bitextdb-ingest-"))
    try:
        model_dir = Path(args.model) if args.model else build_tiny_bert(root / "tiny-bert")
        texts = sentences(args.size)
        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")

        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu")
        model.encode(texts[:256], batch_size=args.batch_size)  # warm up
        start = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        bare = time.perf_counter() - start
        del model

        db = bitextdb.init(root / "home", model=str(model_dir), batch_size=args.batch_size)
        db.encoder.encode(texts[:256])  # load and warm up the same way
        sampler = Sampler()
        sampler.start()
        start = time.perf_counter()
        result = db.ingest(str(corpus), "en", mine=False)
        whole = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        db.close()

        # the same ingest with the model in a child process of its own
        db = bitextdb.init(
            root / "child-home",
            model=str(model_dir),
            batch_size=args.batch_size,
            encoder_process=True,
        )
        db.encoder.encode(texts[:256])  # start the child, load and warm up
        start = time.perf_counter()
        db.ingest(str(corpus), "en", mine=False)
        child = time.perf_counter() - start
        db.close()

        # the storage stages alone, at LaBSE's width: the same file with given vectors
        given = root / "given.npy"
        rng = np.random.default_rng(0)
        np.save(given, rng.standard_normal((args.size, args.given_dim), dtype=np.float32))
        storage: dict[bool, float] = {}
        for index_process in (False, True):
            db = bitextdb.init(
                root / f"given-home-{index_process}",
                model="given",
                dim=args.given_dim,
                index_process=index_process,
            )
            start = time.perf_counter()
            db.ingest(str(corpus), "en", mine=False, embeddings=str(given))
            storage[index_process] = time.perf_counter() - start
            db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report = result["ingested"][0]
    mems = [mb for _, mb in sampler.samples] or [rss_mb()]
    tenth = mems[max(0, len(mems) // 10 - 1)]
    print(f"machine: {machine()}")
    print(f"sentences: {args.size} ({report['new']} new, {report['duplicates']} duplicates)")
    print(f"bare model.encode      {bare:8.1f} s  {args.size / bare:9.0f} sentences/s")
    print(f"whole ingest           {whole:8.1f} s  {args.size / whole:9.0f} sentences/s")
    print(f"ratio ingest / encode  {whole / bare:8.2f}x  (target <= 1.5x)")
    print(
        f"ingest, model in a child process (and the upserts in the writer process) "
        f"{child:8.1f} s  {args.size / child:9.0f} sentences/s  ratio {child / bare:.2f}x"
    )
    for index_process, seconds in storage.items():
        where = "writer process" if index_process else "ingesting process"
        print(
            f"given {args.given_dim}-d vectors, upserts in the {where}  {seconds:8.1f} s  "
            f"{args.size / seconds:9.0f} sentences/s  (storage alone, plus the read that "
            "checks line alignment)"
        )
    print(
        f"RSS during ingest: after 10% {tenth:.0f} MB, peak {max(mems):.0f} MB, "
        f"end {mems[-1]:.0f} MB"
    )


if __name__ == "__main__":
    main()
