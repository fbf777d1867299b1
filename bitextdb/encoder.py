"""Sentence encoding with sentence-transformers: device, dtype, batching, model identity."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config import BACKENDS, device_list, names_a_path, require_devices
from .errors import ConfigError, ModelLoadError, ModelMismatchError
from .model_forward import BatchForward
from .onnx_backend import OnnxModel
from .tokens import (
    DirectTokenizer,
    direct_tokenizer,
    max_length,
    pad_to_multiple,
    padding,
    preprocessor,
    round_up,
)

log = logging.getLogger(__name__)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise float32 rows the way the encoder does (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class TextEncoder(Protocol):
    """What ingest and translate need of an encoder: :class:`Encoder`, or
    :class:`~bitextdb.encoder_process.EncoderProcess` (the same model in a child process)."""

    name: str
    dim: int
    device: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def start(self, texts: Sequence[str]) -> Callable[[], np.ndarray]:
        """Begin encoding ``texts``; call the result for the vectors (an encoder that works
        apart, in a child process, goes on meanwhile; one in process has them ready)."""
        ...

    def close(self) -> None: ...

    def check_dimension(self, expected: int) -> None: ...


Batch = tuple[np.ndarray, dict[str, Any]]
"""Indices of a call's texts and the model's input for them."""


@dataclass
class Prepared:
    """A call made ready for the model (:meth:`Encoder.prepare`): its texts and, on the GPU
    path, its batches (consumed once, by :meth:`Encoder.run`)."""

    texts: list[str]
    batches: Iterable[Batch] | None = None


class Encoded:
    """A call the model has been given (:meth:`Encoder.launch`); :meth:`vectors` gives its
    unit float32 vectors, waiting for the model where it still works.

    On the GPU each batch's result stays there until :meth:`vectors` copies it back, so the
    thread that launches the model can go on to the next call at once, while another (the
    encoder process's saving thread) waits for the copies. When one thread did both, the
    GPU sat idle between calls while the last call's vectors were copied back and put in
    order.
    """

    def __init__(self, count: int, dim: int, parts: Sequence[tuple[np.ndarray, Any]] = ()) -> None:
        self.count, self.dim = count, dim
        self._parts = list(parts)  # (rows of the call, their vectors: a tensor, maybe on a GPU)
        self._vectors: np.ndarray | None = None

    @classmethod
    def ready(cls, vectors: np.ndarray) -> Encoded:
        """A call whose vectors are there already."""
        encoded = cls(*vectors.shape)
        encoded._vectors = vectors
        return encoded

    def vectors(self) -> np.ndarray:
        """The call's vectors (n x dim), in the order of its texts."""
        if self._vectors is None:
            out = np.empty((self.count, self.dim), dtype=np.float32)
            for rows, part in self._parts:
                out[rows] = part.cpu().numpy()
            self._vectors, self._parts = out, []
        return self._vectors


class Encoder:
    """A loaded sentence-transformers model that turns sentences into unit float32 vectors.

    On CUDA the model runs in float16 and ``encode`` is a pipeline: the call's sentences are
    tokenized once (:mod:`bitextdb.tokens`), sorted by length and cut into batches of about
    ``max_tokens`` padded tokens; a worker thread builds the next batches in pinned memory
    while the GPU runs the current one, and results stay on the GPU until the call is done.
    The tokenizing half (:meth:`prepare`) and the model's half (:meth:`run`) are apart, so
    that the next call can be prepared while the model runs this one: a long call does
    that chunk by chunk, and the encoder process between calls.
    Batches are padded to a multiple of ``pad_multiple`` tokens, so their shapes repeat, and
    attention avoids cuDNN's kernel (``attention_backends``): both because a new batch shape
    is slow the first time it is seen (see :data:`ENCODE_ATTENTION`). A BERT-like
    transformer is handed each batch's attention mask ready-expanded
    (:mod:`bitextdb.model_forward`), so launching a batch does not wait for the GPU to
    finish the ones before. Several devices
    (``device="cuda:0,cuda:1"``) use sentence-transformers' multi-process pool. Elsewhere
    ``SentenceTransformer.encode`` does the work, or, with ``backend="onnx"`` (or
    ``"onnx-int8"``), ONNX Runtime on the CPU, or with ``backend="openvino"``, OpenVINO
    (:mod:`bitextdb.onnx_backend`), the exported graph cached in ``cache_dir``.
    ``pipelined`` turns the CUDA pipeline on or off (``None``: on for one CUDA device); on
    elsewhere, the same code runs on the CPU in float32 (tests and benchmarks use that).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_seq_length: int | None = None,
        batch_size: int = 64,
        backend: str = "torch",
        max_tokens: int = 32_768,
        cache_dir: str | os.PathLike[str] | None = None,
        pipelined: bool | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
        on_cpu = backend == "torch" or (device or "cpu") in ("cpu", "auto")
        if not on_cpu:
            raise ConfigError(f"The {backend} backend runs on the CPU; use --device cpu.")
        self.name = model
        self.backend = backend
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.pad_multiple = PAD_MULTIPLE
        self.attention_backends: tuple[str, ...] | None = ENCODE_ATTENTION
        self._expand_mask = True
        devices = device_list(device)
        require_devices(devices)  # before anything is stored: a pool starts at first use
        self.devices = devices if len(devices) > 1 else []
        single = None if self.devices else (devices[0] if devices else None)
        self.model = load_model(
            model,
            device=single if backend == "torch" else "cpu",
            revision=revision,
            trust_remote_code=trust_remote_code,
        )
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.onnx: OnnxModel | None = None
        if backend != "torch":
            identity = {
                "model": model,
                "files": model_fingerprint(model),
                "revision": revision,
                "max_seq_length": self.model.max_seq_length,
            }
            self.onnx = OnnxModel(
                self.model,
                preprocessor(self.model),
                identity=identity,
                quantize=backend == "onnx-int8",
                runtime="openvino" if backend == "openvino" else "onnxruntime",
                cache_dir=cache_dir,
            )
        self.device = ",".join(self.devices) if self.devices else str(self.model.device)
        one_model = not self.devices and backend == "torch"
        on_cuda = one_model and self.device.startswith("cuda")
        if pipelined and not one_model:
            raise ConfigError("The CUDA pipeline runs one torch model on one device.")
        self.pipelined = on_cuda if pipelined is None else pipelined
        if self.pipelined:
            if on_cuda:
                self.model.half()
            # the tokenizer's own threads: our pipeline never forks
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 6
            get_dim = self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._pool: dict[str, Any] | None = None
        self._direct: DirectTokenizer | bool | None = None  # False: the model has none
        self._forward: BatchForward | None = None  # the pipeline's call of the model

    @property
    def expand_mask(self) -> bool:
        """Whether the pipeline may hand the model its attention mask ready-expanded
        (:mod:`bitextdb.model_forward`); ``False``: the model's own call (the benchmarks
        compare the two). Setting it starts the model's check again."""
        return self._expand_mask

    @expand_mask.setter
    def expand_mask(self, value: bool) -> None:
        self._expand_mask, self._forward = value, None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit float32 vectors for ``texts`` (n x dim), in order.

        On the GPU a long call goes in chunks of :data:`PREPARE_CHUNK`, each tokenized in a
        worker thread while the model runs the chunk before (:meth:`prepare`), and each
        chunk's vectors are collected once the next chunk is launched (:meth:`launch`).
        """
        texts = list(texts)
        if not self.pipelined or len(texts) <= PREPARE_CHUNK:
            return self.run(self.prepare(texts))
        chunks = (texts[i : i + PREPARE_CHUNK] for i in range(0, len(texts), PREPARE_CHUNK))
        parts: list[np.ndarray] = []
        waiting: Encoded | None = None
        for job in _prefetch(map(self.prepare, chunks), depth=1):
            launched = self.launch(job)
            if waiting is not None:
                parts.append(waiting.vectors())
            waiting = launched
        assert waiting is not None  # texts is not empty
        parts.append(waiting.vectors())
        return np.concatenate(parts)

    def prepare(self, texts: Sequence[str]) -> Prepared:
        """The CPU half of :meth:`encode`: on the GPU, ``texts`` tokenized, sorted by length
        and cut into batches; elsewhere just the texts (the model tokenizes as it runs).

        Every use of the tokenizer happens here, never in :meth:`run`, so one thread may
        prepare the next call while another runs this one: the encoder process does that.
        """
        texts = list(texts)
        if not self.pipelined or not texts:
            return Prepared(texts)
        return Prepared(texts, self._batch_features(texts))

    def run(self, prepared: Prepared) -> np.ndarray:
        """The model's half of :meth:`encode`: unit float32 vectors for a prepared call."""
        return self.launch(prepared).vectors()

    def launch(self, prepared: Prepared) -> Encoded:
        """:meth:`run`, returning as soon as the model has been given the whole call: on
        the GPU its vectors are copied back when asked for (:class:`Encoded`)."""
        texts = prepared.texts
        if not texts:
            return Encoded.ready(np.zeros((0, self.dim), dtype=np.float32))
        if prepared.batches is not None:
            return self._run_batches(len(texts), prepared.batches)
        if self.onnx is not None:
            return Encoded.ready(normalize_rows(self.onnx.encode(texts, self.batch_size)))
        kwargs: dict[str, Any] = {}
        if self.devices:
            if self._pool is None:
                self._pool = self.model.start_multi_process_pool(self.devices)
            kwargs["pool"] = self._pool
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            **kwargs,
        )
        return Encoded.ready(normalize_rows(vectors))

    def close(self) -> None:
        """Stop the multi-process pool, if one was started."""
        if self._pool is not None:
            self.model.stop_multi_process_pool(self._pool)
            self._pool = None

    # -- the CUDA pipeline ---------------------------------------------------------------
    def token_batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Indices of ``texts``, longest first, in batches of about ``max_tokens`` tokens.

        Sorting by the real token count keeps padding small (a batch is padded to its
        longest sentence); the counts come from one fast, parallel tokenizer pass.
        """
        return self.batches_by_length(self.token_lengths(texts))

    def batches_by_length(self, lengths: np.ndarray) -> list[np.ndarray]:
        """:meth:`token_batches` for texts of ``lengths`` tokens."""
        order = np.argsort(-lengths, kind="stable")
        batches: list[np.ndarray] = []
        start = 0
        while start < len(order):
            longest = round_up(max(1, int(lengths[order[start]])), self.pad_multiple)
            size = max(1, self.max_tokens // longest)
            batches.append(order[start : start + size])
            start += size
        return batches

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text (special tokens included, capped at the maximum length)."""
        limit = max_length(self.model)
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None or not callable(tokenizer):  # estimate: ~3 characters a token
            return np.minimum(np.array([len(t) for t in texts]) // 3 + 2, limit)
        encoded = tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=limit,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)

    def _encode_pipelined(self, texts: list[str]) -> np.ndarray:
        """The GPU path, whatever the device (tests run it on the CPU)."""
        return self._run_batches(len(texts), self._batch_features(texts)).vectors()

    def _run_batches(self, count: int, batches: Iterable[Batch]) -> Encoded:
        """Give the model prepared batches; a worker thread builds the next ones in pinned
        memory while the GPU runs the current one. The results stay on the device until
        :meth:`Encoded.vectors` copies them back, and a BERT-like model is handed each
        batch's attention mask ready-expanded (:mod:`bitextdb.model_forward`), so (after the
        first padded batch's check) nothing here waits for the GPU and the next batches
        queue up behind the one it runs."""
        import torch

        device = self.model.device
        if self._forward is None:
            self._forward = BatchForward(self.model, expand=self.expand_mask)
        results: list[tuple[np.ndarray, Any]] = []
        with torch.inference_mode(), attention_kernels(self.attention_backends):
            for idx, features in _prefetch(iter(batches), depth=4):
                features = {
                    key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
                    for key, value in features.items()
                }
                embedding = self._forward(features)
                results.append((idx, torch.nn.functional.normalize(embedding.float(), dim=1)))
        return Encoded(count, self.dim, results)

    def _batch_features(self, texts: list[str]) -> Iterable[Batch]:
        """Batches of ``texts`` and their model input, in pinned memory on a CUDA machine.

        Where the model's fast tokenizer gives exactly what its ``preprocess`` does
        (:mod:`bitextdb.tokens`), the call is tokenized here in one pass and each batch's
        tensors are cut from the ids later, as the batches are consumed (numpy only, no
        tokenizer). Otherwise ``preprocess`` builds every batch here and now, so that the
        tokenizer, which is not thread-safe, is never used by two threads at once.
        """
        if self._direct is None:
            self._direct = direct_tokenizer(self.model) or False
        direct = self._direct
        if not direct or not direct.agrees(_probe(texts)):
            return list(self._features(texts))
        tokens = direct.token_ids(texts)
        return (
            (idx, _pinned(direct.features(tokens, idx, self.pad_multiple)))
            for idx in self.batches_by_length(tokens.lengths)
        )

    def _features(self, texts: list[str]) -> Iterator[Batch]:
        """:meth:`_batch_features` through the model's ``preprocess``, batch by batch."""
        prepare = preprocessor(self.model)
        pad_id, left = padding(getattr(self.model, "tokenizer", None))
        for idx in self.token_batches(texts):
            features = prepare([texts[i] for i in idx])
            yield idx, _pinned(pad_to_multiple(features, self.pad_multiple, pad_id, left=left))

    def start(self, texts: Sequence[str]) -> Callable[[], np.ndarray]:
        """:meth:`encode` now (this process does the work); the result hands the vectors over."""
        vectors = self.encode(texts)
        return lambda: vectors

    def check_dimension(self, expected: int) -> None:
        require_dimension(self.name, self.dim, expected)


PREPARE_CHUNK = 8192
"""On the GPU, :meth:`Encoder.encode` tokenizes a long call this many texts at a time, each
chunk while the model runs the one before (an ingest's batches are this size already)."""

PAD_MULTIPLE = 8
"""Pipelined batches are padded to a multiple of this many tokens (and sized to match), so a
long ingest sees a few dozen batch shapes, not hundreds."""

ENCODE_ATTENTION: tuple[str, ...] = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
"""The scaled-dot-product attention kernels the pipeline lets torch choose from: all but
cuDNN's, which builds an execution plan for every new batch shape. On an H200 that made the
first pass over 60,000 sentences 5.3x slower than the second (benchmarks/README.md, GPU)."""


def attention_kernels(backends: Sequence[str] | None) -> Any:
    """A context that restricts torch's attention kernels to ``backends`` (names of
    ``torch.nn.attention.SDPBackend``); no restriction for ``None`` or an older torch."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        return contextlib.nullcontext()
    if not backends:
        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, name) for name in backends])


def require_dimension(model: str, dim: int, expected: int) -> None:
    """Refuse a model whose vectors are not the database's ``expected`` size (0: not known)."""
    if expected and dim != expected:
        raise ModelMismatchError(
            f"The model {model} makes {dim}-dimensional vectors but the database "
            f"holds {expected}-dimensional ones."
        )


def _pinned(features: dict[str, Any]) -> dict[str, Any]:
    """``features`` with their tensors in pinned memory where there is a GPU to copy to."""
    import torch

    if not torch.cuda.is_available():
        return features
    return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in features.items()}


def _probe(texts: Sequence[str], size: int = 4) -> list[str]:
    """A few of ``texts`` to check a tokenizer on: the first ones and the longest ones."""
    longest = np.argsort([len(text) for text in texts])[-size:]
    return list(texts[:size]) + [texts[i] for i in longest]


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``items`` in a worker thread, at most ``depth`` ahead of the consumer."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)
        finally:
            buffer.put(done)

    worker = threading.Thread(target=work, name="bitextdb-tokenize", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a worker waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def load_model(  # type: ignore[no-untyped-def]
    model: str,
    *,
    device: str | None,
    revision: str | None,
    trust_remote_code: bool,
):
    """Load a SentenceTransformer, turning every failure into one clear sentence."""
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ModelLoadError("sentence-transformers is not installed; reinstall bitextdb.") from exc
    from huggingface_hub.utils import logging as hub_logging

    hf_logging.disable_progress_bar()  # our own bars only
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # its retries are said once, in our error
    if names_a_path(model) and not Path(model).expanduser().is_dir():
        # a path, not a hub name: no point asking the hub (it retries for a minute offline)
        found = "is a file, not a folder" if Path(model).expanduser().exists() else "does not exist"
        raise ModelLoadError(
            f"The model folder {model} {found}; pass a local sentence-transformers "
            "model folder with --model PATH (if a database's model folder moved, "
            "`bitextdb config --model NEW_PATH` points the database at it)."
        )
    # a hub name with no hub in reach: its cache only, at once (the hub's client retries
    # every file for a minute and a half first)
    offline = not Path(model).expanduser().is_dir() and not hub_reachable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SentenceTransformer(
                model,
                device=None if device in (None, "auto") else device,
                revision=revision,
                trust_remote_code=trust_remote_code,
                local_files_only=offline,
            )
    except Exception as exc:
        log.debug("model load failed", exc_info=True)
        if Path(model).expanduser().is_dir():  # the folder is there: say what went wrong
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"Could not load the model in {model} on device {device or 'auto'}: {reason}"
            ) from exc
        why = (
            "the model hub cannot be reached from here" if offline else "it could not be downloaded"
        )
        raise ModelLoadError(
            f"Could not load the model {model!r} (no such local folder, and {why}); pass a "
            "local sentence-transformers model folder with --model PATH."
        ) from exc


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub (``HF_ENDPOINT``, huggingface.co by default) answers a TCP
    connection. True when offline mode is asked for (the cache is read then anyway) or a
    proxy is set (only the proxy knows)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    proxies = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
    if any(os.environ.get(name) for name in proxies):
        return True
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def model_fingerprint(model: str) -> list[tuple[str, int, int]]:
    """Names, sizes and mtimes of a local model folder's files (empty for a hub name), so a
    cached export is not reused after the folder changes."""
    folder = Path(model)
    if not folder.is_dir():
        return []
    return sorted(
        (str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in folder.rglob("*")
        if f.is_file()
    )
