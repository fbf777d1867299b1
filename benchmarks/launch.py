"""Does preparing the next call hold up the thread that launches the model? Run by hand:

    .venv/bin/python benchmarks/launch.py --sentences .gpu/sentences.txt [--seconds 6]
        [--rounds 3]

On a GPU the encoder's main thread only launches kernels, one torch call after another,
each of which lets go of the interpreter lock and takes it back; meanwhile another thread
tokenizes the next call (``Encoder.prepare``), part of it in Python. Here the "model" is a
12-layer BERT a few units wide, run on one short sentence on the CPU, so that a forward pass
is almost nothing but the Python and dispatch work of launching its operations, as on a
GPU. It is timed alone and beside a thread that prepares calls of 8,192 sentences of the
corpus without a pause (the tokenizer's Rust core on one thread, ``RAYON_NUM_THREADS=1``, so
that the two threads have a core each on a two-core machine).

Besides the launching rate, it records every forward pass's time: a pass that takes much
longer than the rest is a stretch in which the launching thread could not get the lock, and
on a GPU a stretch longer than the batch in flight (about 20 ms on an H200) leaves the GPU
idle. Three ways, each timed once a round, in turn: the tokenizer given a whole call at once
with the heap as it is (the encoder before), 1,024 texts a pass (``tokens.TOKENIZE_TEXTS``,
now), and that with the objects loaded so far frozen (``bitextdb.heap``, as the encoder
process now does once its model is loaded). The full collections of Python's cycle
collector during each window are counted and timed.

An earlier version of this script also timed a 0.5 ms switch interval (worse:
``results-launch-cpu.txt``); the default (5 ms) is kept.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from common import FullCollections, machine  # noqa: E402
from gpu import build_model  # noqa: E402

from bitextdb import tokens  # noqa: E402
from bitextdb.encoder import Encoder  # noqa: E402

NARROW = {
    "vocab_size": 31_000,
    "hidden_size": 32,
    "num_hidden_layers": 12,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def launch_times(model: torch.nn.Module, features: dict, seconds: float) -> list[float]:
    """Seconds of each forward pass run back to back for ``seconds``."""
    times: list[float] = []
    started = last = time.perf_counter()
    with torch.inference_mode():
        while last - started < seconds:
            model(dict(features))
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return times


WAYS = (
    ("a whole call a pass, heap as it is (before)", 1 << 30, False),
    ("1,024 texts a pass", 1024, False),
    ("1,024 texts a pass, loaded objects frozen (now)", 1024, True),
)
GPU_BATCH_SECONDS = 0.020


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    torch.set_num_threads(1)  # the model's own work on one core, the tokenizer's on the other
    sentences = Path(args.sentences).read_text(encoding="utf-8").splitlines()[:57_344]
    scratch = Path(tempfile.mkdtemp(prefix="bitextdb-launch-"))
    folder = scratch / "model"
    encoder = Encoder(str(build_model(folder, sentences, NARROW)), device="cpu", pipelined=True)
    features = {
        k: v
        for k, v in encoder.model.preprocess(["one short sentence"]).items()
        if torch.is_tensor(v)
    }
    calls = [sentences[i : i + 8192] for i in range(0, len(sentences), 8192)]
    stop = threading.Event()
    prepared = [0]

    def prepare_without_pause() -> None:
        turn = 0
        while not stop.is_set():
            job = encoder.prepare(calls[turn % len(calls)])
            list(job.batches or ())  # the batches are cut as they are taken
            prepared[0] += len(job.texts)
            turn += 1

    collections = FullCollections()
    print(f"tracked objects: {len(gc.get_objects()):,}")
    for round_ in range(args.rounds):
        for name, per_pass, frozen in WAYS:
            tokens.TOKENIZE_TEXTS = per_pass
            if frozen:
                gc.freeze()
            alone = launch_times(encoder.model, features, args.seconds / 3)
            stop.clear()
            helper = threading.Thread(target=prepare_without_pause)
            collections.reset()
            before, started = prepared[0], time.perf_counter()
            helper.start()
            beside = launch_times(encoder.model, features, args.seconds)
            rate = (prepared[0] - before) / (time.perf_counter() - started)
            stop.set()
            helper.join()
            gc.unfreeze()
            typical = statistics.median(alone)
            long = [t for t in beside if t > GPU_BATCH_SECONDS]
            full = collections.seconds
            print(
                f"round {round_ + 1}, {name}: {len(beside) / sum(beside):,.0f} passes/s beside "
                f"preparing ({typical * len(beside) / sum(beside):.0%} of alone, "
                f"{typical * 1000:.1f} ms a pass alone); longest pass {max(beside) * 1000:.1f} ms; "
                f"{len(long)} passes over {GPU_BATCH_SECONDS * 1000:.0f} ms, "
                f"{sum(long) * 1000:.0f} ms in all; full collections {len(full)}, "
                f"{', '.join(f'{t * 1000:.0f}' for t in full) or '-'} ms; "
                f"preparing {rate:,.0f} sentences/s"
            )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
