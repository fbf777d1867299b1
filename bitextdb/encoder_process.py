"""The encoder in a process of its own.

During an ingest the ingesting process is busy with SQL, hashing and vector upserts, all
Python code that holds the interpreter lock. A GPU is fed by a Python thread too (the
model's forward pass launches its kernels from Python), so when both share one process the
GPU can sit waiting for the lock (on an H200 the in-process ingest ran at half the encoder's
own rate, benchmarks/README.md). Here the model lives in a child process (``spawn``, as CUDA needs)
with its own interpreter: the parent sends sentences and gets unit vectors back, through a
``.npy`` file rather than the pipe (8,192 vectors of LaBSE's size are 25 MB, which the pool
would pickle in the child and read back in Python chunks in the parent: on an H200 the
child's GPU waited for that, and it was a tenth of the parent's time).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings, device_list
from .encoder import Encoder, require_dimension
from .errors import ModelLoadError

_encoder: Encoder | None = None  # the child's model


def _load(model: str, options: dict[str, Any]) -> dict[str, Any]:
    global _encoder
    _encoder = Encoder(model, **options)
    return {"dim": _encoder.dim, "device": _encoder.device}


@dataclass(frozen=True)
class _Spooled:
    """Vectors the child saved to ``path``; :meth:`load` reads them and removes the file."""

    path: str

    def load(self) -> np.ndarray:
        try:
            return np.load(self.path, allow_pickle=False)
        finally:
            Path(self.path).unlink(missing_ok=True)


def _encode(texts: list[str], path: str) -> _Spooled:
    assert _encoder is not None, "the encoder process has no model"
    np.save(path, _encoder.encode(texts), allow_pickle=False)
    return _Spooled(path)


def _close() -> None:
    if _encoder is not None:
        _encoder.close()


_SPOOL_PREFIX = "bitextdb-vectors-"  # then the parent's pid: a folder per EncoderProcess


def _remove_stale_spools() -> None:
    """Remove the vector folders of parents that are gone (killed before they closed)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_SPOOL_PREFIX}*-*"):
        pid = folder.name[len(_SPOOL_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a PermissionError means another user's process: alive
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def wants_encoder_process(settings: Settings) -> bool:
    """Whether ingest should run the model in a child process: as set, else for one GPU.

    Meant for a GPU: on the CPU the model's own threads already use every core, and the
    child would add its start-up time.
    """
    if settings.encoder_process is not None:
        return settings.encoder_process
    if settings.backend != "torch":
        return False
    devices = [d for d in device_list(settings.device) if d != "auto"]
    if not devices:
        import torch

        devices = ["cuda" if torch.cuda.is_available() else "cpu"]
    return len(devices) == 1 and devices[0].startswith("cuda")


class EncoderProcess:
    """An :class:`~bitextdb.encoder.Encoder` (same arguments) running in a child process.

    ``encode`` blocks the calling thread only, which waits without holding the interpreter
    lock; ``submit`` returns a future so a caller can queue the next batch while the child
    encodes the current one. Errors raised in the child (a model that cannot be loaded, a
    CUDA failure) are raised here with their own message; a child that dies is reported as
    a :class:`ModelLoadError`.
    """

    def __init__(self, model: str, **options: Any) -> None:
        self.name = model
        self.backend = options.get("backend", "torch")
        _remove_stale_spools()
        self._spool = Path(tempfile.mkdtemp(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-"))
        self._numbers = itertools.count()  # thread-safe: next() on it is one C call
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        try:
            info = self.wait(self._pool.submit(_load, model, options))
        except BaseException:
            self.close()
            raise
        self.dim: int = info["dim"]
        self.device: str = info["device"]

    def submit(self, texts: Sequence[str]) -> Future[Any]:
        """Start encoding ``texts`` in the child; :meth:`wait` on the future gives what
        ``encode`` gives."""
        if self._pool is None:
            raise ModelLoadError("The encoder process was closed.")
        path = self._spool / f"{next(self._numbers)}.npy"
        return self._pool.submit(_encode, list(texts), str(path))

    def start(self, texts: Sequence[str]) -> Callable[[], np.ndarray]:
        """Queue ``texts`` in the child; the result waits for their vectors."""
        future = self.submit(texts)
        return lambda: self.wait(future)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit float32 vectors for ``texts`` (n x dim), in order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.wait(self.submit(texts))

    def wait(self, future: Future[Any]) -> Any:
        """The result of a :meth:`submit` future; a dead child becomes a clear error."""
        try:
            result = future.result()
            return result.load() if isinstance(result, _Spooled) else result
        except BrokenProcessPool as exc:
            raise ModelLoadError(
                f"The encoder process for {self.name} stopped unexpectedly (out of memory?); "
                "run again, with a smaller --batch-size or --no-encoder-process."
            ) from exc

    def close(self) -> None:
        """Stop the child process (and any pool of its own)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with contextlib.suppress(Exception):  # a child that is gone has nothing left to close
            pool.submit(_close).result(timeout=60)
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._spool, ignore_errors=True)  # vectors nobody waited for

    def check_dimension(self, expected: int) -> None:
        require_dimension(self.name, self.dim, expected)
