"""The ONNX backends (ONNX Runtime, OpenVINO): same vectors as torch, cached exports, clear
failures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bitextdb.cli import cli
from bitextdb.encoder import Encoder
from bitextdb.errors import ConfigError, ModelLoadError
from tests.cli_helpers import mine_small_corpus

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("openvino", reason="the openvino extra is not installed")

TEXTS = [
    "the house is big",
    "a dog runs in the street and the cat sleeps on the table by the window",
    "der hund",
    "el perro y el gato son amigos",
    "x",
] * 7


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "static_model"])
def test_onnx_gives_the_torch_vectors(
    model_fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model = str(request.getfixturevalue(model_fixture))
    want = Encoder(model, batch_size=4).encode(TEXTS)
    for backend in ("onnx", "openvino"):
        exact = Encoder(model, batch_size=4, backend=backend, cache_dir=tmp_path).encode(TEXTS)
        assert exact.shape == want.shape and exact.dtype == np.float32
        assert np.abs(exact - want).max() < 1e-5, backend
    int8 = Encoder(model, batch_size=4, backend="onnx-int8", cache_dir=tmp_path).encode(TEXTS)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1, atol=1e-5)
    assert (int8 * want).sum(axis=1).min() > 0.99  # quantized weights: close, not equal


def test_labse_shaped_pipeline_exports_whole(tiny_bert: Path, tmp_path: Path) -> None:
    """LaBSE's module chain (CLS pooling, a tanh Dense layer, Normalize) is one graph."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    base = SentenceTransformer(str(tiny_bert), device="cpu")
    width = base[0].get_embedding_dimension()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        dense = Dense(width, 24)
    model = SentenceTransformer(
        modules=[base[0], Pooling(width, pooling_mode="cls"), dense, Normalize()], device="cpu"
    )
    model.save(str(tmp_path / "labse-shaped"))
    path = str(tmp_path / "labse-shaped")
    want = Encoder(path, batch_size=4).encode(TEXTS)
    for backend in ("onnx", "openvino"):
        got = Encoder(path, batch_size=4, backend=backend, cache_dir=tmp_path / "c").encode(TEXTS)
        assert got.shape == (len(TEXTS), 24)
        assert np.abs(got - want).max() < 1e-5, backend


def test_the_export_is_cached_and_reused(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Encoder(str(tiny_bert), backend="onnx", cache_dir=tmp_path)
    assert first.onnx is not None and first.onnx.path.parent == tmp_path
    exported = sorted(tmp_path.iterdir())
    assert [p.suffix for p in exported] == [".onnx"]  # no temporary file left behind

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = Encoder(str(tiny_bert), backend="onnx", cache_dir=tmp_path)
    assert np.array_equal(again.encode(TEXTS), first.encode(TEXTS))
    # another sequence length is another tokenization: a new cache entry, not the old one
    with pytest.raises(ModelLoadError, match="export"):
        Encoder(str(tiny_bert), backend="onnx", cache_dir=tmp_path, max_seq_length=8)
    assert sorted(tmp_path.iterdir()) == exported
    # OpenVINO compiles the same export, and needs no ONNX Runtime to do so
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    openvino = Encoder(str(tiny_bert), backend="openvino", cache_dir=tmp_path)
    assert openvino.onnx is not None and openvino.onnx.path == first.onnx.path
    assert np.abs(openvino.encode(TEXTS) - first.encode(TEXTS)).max() < 1e-5


@pytest.mark.parametrize(
    ("backend", "module"), [("onnx", "onnxruntime"), ("openvino", "openvino"), ("openvino", "onnx")]
)
def test_missing_runtime_is_one_clear_sentence(
    backend: str, module: str, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModelLoadError, match=rf"bitextdb\[{backend}\]"):
        Encoder(str(tiny_bert), backend=backend, cache_dir=tmp_path)


def test_onnx_refuses_a_gpu_and_unknown_backends(tiny_bert: Path) -> None:
    for backend in ("onnx", "openvino"):
        with pytest.raises(ConfigError, match="CPU"):
            Encoder(str(tiny_bert), backend=backend, device="cuda")
    with pytest.raises(ConfigError, match="backend"):
        Encoder(str(tiny_bert), backend="openvino-int8")


def test_cli_ingest_with_the_onnx_backends(home: Path, static_model: Path) -> None:
    """The same corpora through torch, ONNX Runtime and OpenVINO give the same pairs."""
    pairs = {
        backend: mine_small_corpus(home / backend, static_model, "--backend", backend)
        for backend in ("torch", "onnx", "openvino")
    }
    assert pairs["onnx"] == pairs["openvino"] == pairs["torch"] and len(pairs["torch"]) == 3
    assert list((home / "onnx" / "onnx").glob("*.onnx"))  # the export lives in the home

    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home / "onnx"), "config", "--backend", "tensorrt"])
    assert result.exit_code == 2 and "Traceback" not in result.output
