"""How much of the tokenizer's time the GPU path hides by preparing one call while the model
runs another, measured on the CPU (no GPU needed):

    python benchmarks/overlap.py --sentences .gpu/sentences.txt [--repeats 3]

The GPU path (``Encoder.prepare`` then ``Encoder.run``, forced on here) runs with a small
BERT whose vocabulary comes from the corpus, so that tokenizing costs what it costs with a
real WordPiece vocabulary while the forward pass is cheap, as on a GPU. Timed, alternating,
in one run: preparing alone, running alone, one pass over the whole corpus (tokenize all,
then run: the encoder before this change), and ``Encoder.encode``, which prepares chunk i+1
in a worker thread while the model runs chunk i; last, the encoder process (the GPU path
forced on in the child too) fed one ingest batch a call, all queued at once as an ingest
queues them: its child prepares the next call while the model runs the current one. On a GPU
machine the tokenizer and the model do not share cores; on this 2-core VM they do, so the
overlap here is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # what the GPU path sets
# one core for the tokenizer and one for the model, as the model has the GPU to itself there
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch's threads, here and in the encoder process

SMALL = {
    "vocab_size": 501_153,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from benchmarks.gpu import build_model

    torch.set_num_threads(1)
    from bitextdb.encoder import PREPARE_CHUNK, Encoder
    from bitextdb.encoder_process import EncoderProcess

    sentences = args.sentences.read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "small-bert", sentences, SMALL)
        encoder = Encoder(str(model), device="cpu", pipelined=True)  # the GPU path, on the CPU
        child = EncoderProcess(str(model), device="cpu", pipelined=True)
    chunks = [sentences[i : i + PREPARE_CHUNK] for i in range(0, len(sentences), PREPARE_CHUNK)]
    encoder.encode(sentences[:2048])  # warm up
    child.encode(sentences[:2048])

    seconds: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeats):
            measure_once(encoder, child, sentences, chunks, seconds)
    finally:
        child.close()
    best = {name: min(values) for name, values in seconds.items()}
    out = {
        "sentences": len(sentences),
        "chunk": PREPARE_CHUNK,
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "per_s": {name: len(sentences) / value for name, value in best.items()},
        "overlapped_vs_one_pass": best["one_pass"] / best["overlapped"],
        "overlapped_vs_sum": (best["prepare"] + best["run"]) / best["overlapped"],
        "overlapped_vs_slower_half": max(best["prepare"], best["run"]) / best["overlapped"],
        "encoder_process_vs_overlapped": best["overlapped"] / best["encoder_process"],
    }
    print(json.dumps(out, indent=2))


def timed(work) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure_once(encoder, child, sentences, chunks, seconds) -> None:  # type: ignore[no-untyped-def]
    """One round of every way, in turn, so that the VM's slow moments hit them alike; the
    encoder process last, fed as an ingest feeds it."""
    from benchmarks.gpu import encode_queued

    prepared: list = []
    seconds.setdefault("prepare", []).append(
        timed(lambda: prepared.extend(map(encoder.prepare, chunks)))
    )
    seconds.setdefault("run", []).append(timed(lambda: [encoder.run(p) for p in prepared]))
    seconds.setdefault("one_pass", []).append(timed(lambda: encoder._encode_pipelined(sentences)))
    seconds.setdefault("overlapped", []).append(timed(lambda: encoder.encode(sentences)))
    seconds.setdefault("encoder_process", []).append(encode_queued(child, sentences))


if __name__ == "__main__":
    main()
