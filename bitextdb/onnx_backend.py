"""CPU encoding with ONNX Runtime or OpenVINO: the whole sentence-transformers model, exported
once to ONNX.

sentence-transformers' own ONNX and OpenVINO backends go through ``optimum``, whose
releases pin transformers < 5, so they cannot be installed beside sentence-transformers 6.
Here the model's modules (transformer, pooling, dense layers, normalisation) are traced into
one ONNX graph with torch's exporter (which needs ``onnx``), cached by model and options, and
run by ONNX Runtime (``onnx``, the ``bitextdb[onnx]`` extra) or by OpenVINO, which compiles
the same ONNX file itself (``openvino``, the ``bitextdb[openvino]`` extra); tokenization
stays sentence-transformers' own. ``onnx-int8`` adds ONNX Runtime's dynamic int8
quantization of the weights: faster, with vectors slightly off the float32 ones.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError

#: a runtime's module, its name for people, and the extra that installs it
RUNTIMES = {"onnxruntime": ("ONNX Runtime", "onnx"), "openvino": ("OpenVINO", "openvino")}

Batches = Iterable[tuple[np.ndarray, dict[str, np.ndarray]]]  # row indices, model inputs
Runner = Callable[[Batches], Iterator[tuple[np.ndarray, np.ndarray]]]  # -> rows, vectors


def _require_runtime(runtime: str) -> Any:
    name, extra = RUNTIMES[runtime]
    try:
        import onnx  # noqa: F401  (the exporter and the quantizer need it)

        return importlib.import_module(runtime)
    except ImportError as exc:
        raise ModelLoadError(
            f"The {extra} backend needs {name}; install 'bitextdb[{extra}]' or use --backend torch."
        ) from exc


class OnnxModel:
    """A sentence-transformers model exported to ONNX, run on the CPU by ``runtime``:
    ``"onnxruntime"`` or ``"openvino"``."""

    def __init__(
        self,
        model: Any,
        prepare: Callable[[list[str]], dict[str, Any]],
        *,
        identity: dict[str, Any],
        quantize: bool = False,
        runtime: str = "onnxruntime",
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> None:
        module = _require_runtime(runtime)
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
        start = _openvino if runtime == "openvino" else _onnxruntime
        self._run = start(module, path, threads or torch.get_num_threads())
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
        batches = (
            (rows, self._features([texts[i] for i in rows]))
            for rows in (order[s : s + batch_size] for s in range(0, len(order), batch_size))
        )
        out: np.ndarray | None = None
        for rows, vectors in self._run(batches):
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None
        return out


def _onnxruntime(ort: Any, path: Path, threads: int) -> Runner:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: graph-rewrite notes are not the user's
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batches: Batches) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows, features in batches:
            yield rows, session.run(["embedding"], features)[0]

    return run


def _openvino(ov: Any, path: Path, threads: int) -> Runner:
    options = {
        # float32 everywhere: OpenVINO's default on CPUs with bfloat16 units is bfloat16,
        # which would make this backend's vectors depend on the machine
        "INFERENCE_PRECISION_HINT": "f32",
        # one request at a time on all cores: on 2 idle cores at par with THROUGHPUT streams
        # fed by several requests at once (batch 32), or ~8 % faster (batch 64); and an
        # AsyncInferQueue once hung our tests as a compiled model was freed (2026.4.1)
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
    }
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", options)
    except Exception as exc:
        raise ModelLoadError(
            f"OpenVINO could not compile the exported model ({type(exc).__name__}: {exc}); "
            "use --backend onnx or torch."
        ) from exc

    def run(batches: Batches) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        request = compiled.create_infer_request()  # one per call: calls may overlap
        for rows, features in batches:
            yield rows, request.infer(features)[0]

    return run
