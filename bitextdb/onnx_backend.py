"""CPU encoding with ONNX Runtime: the whole sentence-transformers model, exported once.

sentence-transformers' own ONNX and OpenVINO backends go through ``optimum``, whose
releases pin transformers < 5, so they cannot be installed beside sentence-transformers 6.
This backend needs only ``onnxruntime`` and ``onnx`` (the ``bitextdb[onnx]`` extra): the
model's modules (transformer, pooling, dense layers, normalisation) are traced into one
ONNX graph with torch's exporter, cached by model and options, and run by ONNX Runtime;
tokenization stays sentence-transformers' own. ``onnx-int8`` adds ONNX Runtime's dynamic
int8 quantization of the weights: faster, with vectors slightly off the float32 ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError


def _require_runtime() -> Any:
    try:
        import onnx  # noqa: F401  (the exporter and the quantizer need it)
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError(
            "The onnx backend needs ONNX Runtime; install 'bitextdb[onnx]' or use --backend torch."
        ) from exc
    return onnxruntime


class OnnxModel:
    """A sentence-transformers model run by ONNX Runtime on the CPU."""

    def __init__(
        self,
        model: Any,
        prepare: Callable[[list[str]], dict[str, Any]],
        *,
        identity: dict[str, Any],
        quantize: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> None:
        ort = _require_runtime()
        import torch

        self.model = model
        self._prepare = prepare
        sample = self._features(["a sentence", "another, longer sentence"])
        self.input_names = list(sample)
        cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "bitextdb-onnx"
        key = json.dumps(
            identity
            | {"quantize": quantize, "inputs": self.input_names, "torch": torch.__version__},
            sort_keys=True,
            default=str,
        )
        stem = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = cache / f"{stem}{'.int8' if quantize else ''}.onnx"
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            self._export(sample, path, quantize)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: graph-rewrite notes are not the user's
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def _features(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        import torch

        features = self._prepare(list(texts))
        return {
            name: value.numpy()
            for name, value in features.items()
            if isinstance(value, torch.Tensor)
        }

    def _export(self, sample: dict[str, np.ndarray], path: Path, quantize: bool) -> None:
        import torch

        model, names = self.model, self.input_names

        class Whole(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                return self.inner(dict(zip(names, tensors)))["sentence_embedding"]

        axes = {
            name: {axis: f"{name}_{axis}" for axis in range(value.ndim)}
            for name, value in sample.items()
        }
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        plain = tmp.with_suffix(".fp32.onnx") if quantize else tmp
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    Whole().eval(),
                    tuple(torch.from_numpy(sample[n]) for n in names),
                    str(plain),
                    input_names=names,
                    output_names=["embedding"],
                    dynamic_axes=axes | {"embedding": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
            if quantize:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                logging.disable(logging.WARNING)  # it logs advice on the root logger
                try:
                    quantize_dynamic(
                        str(plain), str(tmp), weight_type=QuantType.QInt8, per_channel=True
                    )
                finally:
                    logging.disable(logging.NOTSET)
            tmp.replace(path)  # other processes see a whole file or none
        except Exception as exc:
            raise ModelLoadError(
                f"Could not export the model to ONNX ({type(exc).__name__}: {exc}); "
                "use --backend torch."
            ) from exc
        finally:
            for leftover in (tmp, plain):
                leftover.unlink(missing_ok=True)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Float32 embeddings (not normalised) of ``texts``, in order.

        Sentences go through in batches of similar length, so padding stays small.
        """
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = self._features([texts[i] for i in rows])
            (vectors,) = self.session.run(["embedding"], features)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None
        return out
