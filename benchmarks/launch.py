"""Does preparing the next call slow the thread that launches the model? Run by hand:

    .venv/bin/python benchmarks/launch.py --sentences .gpu/sentences.txt [--seconds 6]

On a GPU the encoder's main thread only launches kernels, one torch call after another,
each of which lets go of the interpreter lock and takes it back; meanwhile another thread
tokenizes the next call (``Encoder.prepare``), part of it in Python. Here the "model" is a
12-layer BERT a few units wide, run on one short sentence on the CPU, so that a forward pass
is almost nothing but the Python and dispatch work of launching its operations, as on a
GPU. It is timed alone and beside a thread that prepares calls of 8,192 sentences of the
corpus without a pause (the tokenizer's Rust core on one thread, ``RAYON_NUM_THREADS=1``, so
that the two threads have a core each on a two-core machine), at the interpreter's default
switch interval (5 ms) and at 0.5 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from common import machine  # noqa: E402
from gpu import build_model  # noqa: E402

from bitextdb.encoder import Encoder  # noqa: E402

NARROW = {
    "vocab_size": 31_000,
    "hidden_size": 32,
    "num_hidden_layers": 12,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def launches_per_second(model: torch.nn.Module, features: dict, seconds: float) -> float:
    """Forward passes a second over ``seconds``."""
    count, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            model(dict(features))
            count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
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

    for interval in (0.005, 0.0005):
        sys.setswitchinterval(interval)
        alone = launches_per_second(encoder.model, features, args.seconds / 2)
        stop.clear()
        helper = threading.Thread(target=prepare_without_pause)
        helper.start()
        before, started = prepared[0], time.perf_counter()
        beside = launches_per_second(encoder.model, features, args.seconds)
        rate = (prepared[0] - before) / (time.perf_counter() - started)
        stop.set()
        helper.join()
        print(
            f"switch interval {interval * 1000:.1f} ms: {alone:,.0f} forward passes/s alone "
            f"({1000 / alone:.1f} ms each), {beside:,.0f}/s beside preparing "
            f"({beside / alone:.0%}); preparing ran at {rate:,.0f} sentences/s meanwhile"
        )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
