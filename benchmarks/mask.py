"""What handing the model its attention mask ready-expanded costs or saves the thread that
launches it, on the CPU. Run by hand:

    .venv/bin/python benchmarks/mask.py --sentences .gpu/sentences-short.txt [--rounds 5]

On a GPU the point of ``bitextdb.model_forward`` is that the launching thread no longer
waits for the GPU on every batch (transformers asks whether the mask is all ones, which
reads it back); that only shows on a GPU (``gpu.py`` times the encoder both ways and counts
the waits). What a CPU can show is the launching work itself: the model here is a 12-layer
BERT a few units wide (``launch.py``'s), so a forward pass is almost nothing but the Python
and dispatch work of launching its operations (running them is included, and small), on a
padded batch of the corpus' first ``--batch`` sentences (8). Both ways are timed once a
round, in turn, the first of the two alternating from round to round; after the expanded
call's check, its vectors are compared with the model's own call's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from common import machine  # noqa: E402
from gpu import build_model  # noqa: E402
from launch import NARROW  # noqa: E402

from bitextdb.encoder import Encoder  # noqa: E402
from bitextdb.model_forward import BatchForward  # noqa: E402


def pass_seconds(call: BatchForward, features: dict, seconds: float) -> float:
    """Median seconds of a forward pass, run back to back for ``seconds``."""
    times: list[float] = []
    started = last = time.perf_counter()
    while last - started < seconds:
        call(features)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print(machine())
    torch.set_num_threads(1)
    sentences = Path(args.sentences).read_text(encoding="utf-8").splitlines()[:20_000]
    scratch = Path(tempfile.mkdtemp(prefix="bitextdb-mask-"))
    try:
        model = build_model(scratch / "model", sentences, NARROW)
        encoder = Encoder(str(model), device="cpu", pipelined=True)
        prepared = encoder.prepare(sentences[: args.batch])
        assert prepared.batches is not None
        _, features = next(iter(prepared.batches))
        padding = float((features["attention_mask"] == 0).float().mean())
        print(f"batch {tuple(features['input_ids'].shape)}, {padding:.0%} padding")
        calls = {"model's own call": BatchForward(encoder.model, expand=False)}
        calls["expanded mask"] = BatchForward(encoder.model)
        medians: dict[str, list[float]] = {name: [] for name in calls}
        with torch.inference_mode():
            calls["expanded mask"](features)  # the check (it returns the model's own vectors)
            assert calls["expanded mask"].expanded, "the model did not take the expanded mask"
            own, expanded = (call(features) for call in calls.values())
            print(f"largest difference in the vectors: {float((own - expanded).abs().max())}")
            for round_ in range(args.rounds):
                order = list(calls.items())
                for name, call in order if round_ % 2 == 0 else order[::-1]:
                    medians[name].append(pass_seconds(call, features, args.seconds))
                print(
                    f"round {round_ + 1}: "
                    + "; ".join(f"{name} {m[-1] * 1000:.3f} ms" for name, m in medians.items())
                )
        own_ms, expanded_ms = (statistics.median(m) * 1000 for m in medians.values())
        print(
            f"median of the rounds: model's own call {own_ms:.3f} ms a pass, expanded mask "
            f"{expanded_ms:.3f} ms ({expanded_ms / own_ms:.2f}x)"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
