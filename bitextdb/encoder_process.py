"""The encoder in a process of its own.

During an ingest the ingesting process is busy with SQL, hashing and vector upserts, all
Python code that holds the interpreter lock. A GPU is fed by a Python thread too (the
model's forward pass launches its kernels from Python), so when both share one process the
GPU can sit waiting for the lock (on an H200 the in-process ingest ran at half the encoder's
own rate, benchmarks/README.md). Here the model lives in a child process (``spawn``, as CUDA
needs) with its own interpreter.

The parent sends each call's sentences down a pipe and gets unit vectors back through a
``.npy`` file rather than the pipe (8,192 vectors of LaBSE's size are 25 MB, which a pipe
would pickle in the child and read back in Python chunks in the parent: on an H200 the
child's GPU waited for that, and it was a tenth of the parent's time). In the child one
thread tokenizes and batches each call as it arrives (:meth:`Encoder.prepare`), the main
thread gives the model the call before (:meth:`Encoder.launch`), and a third waits for the
vectors of the call before that, copies them back from the GPU and saves them. When they
took turns the GPU sat idle meanwhile: on an H200 the tokenizer's pass over each
8,192-sentence call took a third of the child's time, the save less (run 8's profile,
benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings, device_list
from .encoder import Encoded, Encoder, Prepared, require_dimension
from .errors import ModelLoadError
from .heap import freeze_loaded

_SPOOL_PREFIX = "bitextdb-vectors-"  # then the parent's pid: a folder per EncoderProcess
_JOIN_SECONDS = 60.0
_IDLE_EXIT_SECONDS = 1.0  # how long close() gives the child to finish on its own


@dataclass(frozen=True)
class _Spooled:
    """Vectors the child saved to ``path``; :meth:`load` reads them and removes the file."""

    path: str

    def load(self) -> np.ndarray:
        try:
            return np.load(self.path, allow_pickle=False)
        finally:
            Path(self.path).unlink(missing_ok=True)


class ChildTraceback(Exception):
    """The traceback of an error raised in the encoder process (set as its cause)."""


# -- the child -----------------------------------------------------------------------------
def _serve(
    model: str,
    options: dict[str, Any],
    requests: Connection,
    replies: Connection,
    cancelled: Any,
) -> None:
    """The child's main: load the model, then encode each request, in order, until the
    parent sends ``None`` or goes away. ``cancelled`` (an event) skips the work left.

    An interrupt (Ctrl-C reaches the whole process group; :meth:`EncoderProcess.close`
    sends one to a child busy with a call nobody waits for) stops it where it is, quietly:
    the calls it had are the parent's to fail or forget, and it holds nothing to save.
    """
    try:
        encoder = Encoder(model, **options)
    except KeyboardInterrupt:
        return
    except BaseException as exc:
        _send(replies, ("failed", *_portable(exc)))
        return
    freeze_loaded()  # the model and the libraries: full collections skip them (bitextdb.heap)
    _send(replies, ("ready", {"dim": encoder.dim, "device": encoder.device}))
    try:
        _work(encoder, requests, replies, cancelled)
    except KeyboardInterrupt:
        pass
    finally:
        encoder.close()


def _work(encoder: Any, requests: Connection, replies: Connection, cancelled: Any) -> None:
    """Answer the requests in order, in three threads: one prepares each call
    (:func:`_prepare_calls`), this one gives the model the call before, and one waits for
    that call's vectors, saves them and tells the parent (:func:`_answer_calls`), so the
    GPU waits for neither the tokenizer, nor the copy of its results, nor the disk."""
    prepared: queue.Queue[Any] = queue.Queue(maxsize=1)  # one call ready while one runs
    finished: queue.Queue[Any] = queue.Queue(maxsize=1)  # and one being saved
    helpers = [
        threading.Thread(
            target=_prepare_calls,
            args=(encoder, requests, prepared, cancelled),
            name="bitextdb-prepare",
            daemon=True,
        ),
        threading.Thread(
            target=_answer_calls, args=(replies, finished), name="bitextdb-answer", daemon=True
        ),
    ]
    for helper in helpers:
        helper.start()
    while (item := prepared.get()) is not None:
        number, path, job = item
        if cancelled.is_set():
            continue
        try:
            if isinstance(job, BaseException):
                raise job
            result: Encoded | BaseException = encoder.launch(job)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            result = exc
        finished.put((number, path, result))
    finished.put(None)
    helpers[1].join()


def _answer_calls(replies: Connection, finished: queue.Queue[Any]) -> None:
    """The child's third thread: wait for each call's vectors (copied back from the GPU
    here, while the model's thread launches the next call), save them and tell the parent,
    in order."""
    parent_gone = False
    while (item := finished.get()) is not None:
        number, path, result = item
        if parent_gone:
            continue  # drained, so that the model's thread never blocks on a full queue
        try:
            if isinstance(result, BaseException):
                raise result
            _save(path, result.vectors())  # waits here for the model, not in its thread
            reply: tuple[Any, ...] = ("done", number, path)
        except BaseException as exc:
            reply = ("error", number, *_portable(exc))
        parent_gone = not _send(replies, reply)


def _save(path: str, vectors: np.ndarray) -> None:
    np.save(path, vectors, allow_pickle=False)


def _prepare_calls(
    encoder: Any, requests: Connection, prepared: queue.Queue[Any], cancelled: Any
) -> None:
    """The child's second thread: receive each call and tokenize it for :func:`_work`."""
    try:
        while (request := requests.recv()) is not None:
            number, texts, path = request
            if cancelled.is_set():
                continue
            try:
                job: Prepared | BaseException = encoder.prepare(texts)
            except BaseException as exc:  # raised by the main thread, in the call's turn
                job = exc
            prepared.put((number, path, job))
    except (EOFError, OSError):  # the parent is gone
        pass
    prepared.put(None)


def _portable(exc: BaseException) -> tuple[BaseException, str]:
    """``exc`` as it can cross the pipe (its type kept where it pickles), and its traceback."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc, text


def _send(connection: Connection, message: tuple[Any, ...]) -> bool:
    try:
        connection.send(message)
        return True
    except (BrokenPipeError, EOFError, OSError):
        return False


# -- the parent ----------------------------------------------------------------------------
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
    child would add its start-up time. Never for several devices: sentence-transformers'
    pool already runs the model in a process per device.
    """
    devices = [d for d in device_list(settings.device) if d != "auto"]
    if len(devices) > 1:
        return False
    if settings.encoder_process is not None:
        return settings.encoder_process
    if settings.backend != "torch":
        return False
    if not devices:
        import torch

        devices = ["cuda" if torch.cuda.is_available() else "cpu"]
    return devices[0].startswith("cuda")


class EncoderProcess:
    """An :class:`~bitextdb.encoder.Encoder` (same arguments) running in a child process.

    ``encode`` blocks the calling thread only, which waits without holding the interpreter
    lock; ``submit`` returns a future so a caller can queue the next call while the child
    encodes the current one (the child tokenizes a queued call meanwhile). Errors raised in
    the child (a model that cannot be loaded, a CUDA failure) are raised here with their own
    type and message; a child that dies is reported as a :class:`ModelLoadError`.
    """

    def __init__(self, model: str, **options: Any) -> None:
        self.name = model
        self.backend = options.get("backend", "torch")
        _remove_stale_spools()
        self._spool = Path(tempfile.mkdtemp(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-"))
        self._numbers = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()  # guards _pending, _failure and _closed
        self._send_lock = threading.Lock()  # one message at a time down the pipe
        self._failure: BaseException | None = None
        self._closed = False
        context = multiprocessing.get_context("spawn")
        self._cancelled = context.Event()
        child_requests, self._requests = context.Pipe(duplex=False)  # (reading, writing)
        self._replies, child_replies = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve,
            args=(model, options, child_requests, child_replies, self._cancelled),
            name="bitextdb-encoder",
            daemon=True,  # stopped with this process, should it exit without close()
        )
        self._reader: threading.Thread | None = None
        try:
            self._process.start()
            child_requests.close()  # this process keeps only its own ends: EOF when one goes
            child_replies.close()
            info = self._handshake(model)
        except BaseException:
            self.close()
            raise
        self.dim: int = info["dim"]
        self.device: str = info["device"]
        self._reader = threading.Thread(
            target=self._read_replies, name="bitextdb-encoder-replies", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int | None:
        """The child process's id."""
        return self._process.pid

    def submit(self, texts: Sequence[str]) -> Future[Any]:
        """Start encoding ``texts`` in the child; :meth:`wait` on the future gives what
        ``encode`` gives."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise ModelLoadError("The encoder process was closed.")
            if self._failure is not None:
                future.set_exception(self._failure)
                return future
            number = next(self._numbers)
            self._pending[number] = future
        path = str(self._spool / f"{number}.npy")
        with self._send_lock:
            sent = _send(self._requests, (number, list(texts), path))
        if not sent:  # the child is gone; the reader settles the future
            self._reader_settles_soon()
        return future

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
        """The result of a :meth:`submit` future."""
        result = future.result()
        return result.load() if isinstance(result, _Spooled) else result

    def close(self) -> None:
        """Stop the child process; calls not yet waited for are cancelled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = self._pending, {}
        self._cancelled.set()
        for future in pending.values():
            future.cancel()
        # another thread may be stuck sending a call to a child busy with an earlier one
        if self._send_lock.acquire(timeout=_IDLE_EXIT_SECONDS):
            try:
                _send(self._requests, None)
            finally:
                self._send_lock.release()
        if self._process.pid is not None:
            self._process.join(_IDLE_EXIT_SECONDS)  # an idle child is gone by now
            if self._process.is_alive():  # busy with a call nobody waits for: stop it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._process.pid, signal.SIGINT)
                self._process.join(_JOIN_SECONDS)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        with contextlib.suppress(OSError):
            self._requests.close()
        if self._reader is not None:
            self._reader.join(_JOIN_SECONDS)
        with contextlib.suppress(OSError):
            self._replies.close()
        shutil.rmtree(self._spool, ignore_errors=True)  # vectors nobody waited for

    def check_dimension(self, expected: int) -> None:
        require_dimension(self.name, self.dim, expected)

    # -- replies -------------------------------------------------------------------------
    def _next_reply(self) -> tuple[Any, ...] | None:
        """The child's next message; ``None`` once it is gone and has nothing more to say."""
        while True:
            ready = wait([self._replies, self._process.sentinel])
            if self._replies in ready:
                try:
                    return self._replies.recv()  # type: ignore[no-any-return]
                except (EOFError, OSError):
                    return None
            if not self._replies.poll():  # only the child's exit: nothing buffered
                return None

    def _handshake(self, model: str) -> dict[str, Any]:
        reply = self._next_reply()
        if reply is None:
            raise ModelLoadError(
                f"The encoder process for {model} stopped while loading the model "
                "(out of memory?); run again with --no-encoder-process to see why."
            )
        if reply[0] == "failed":
            raise _raised_here(reply[1], reply[2])
        return reply[1]  # type: ignore[no-any-return]

    def _read_replies(self) -> None:
        """Settle each call's future as the child answers it, until the child is gone."""
        while (reply := self._next_reply()) is not None:
            kind, number, *rest = reply
            with self._lock:
                future = self._pending.pop(number, None)
            if future is None or future.done():  # cancelled by close()
                continue
            if kind == "done":
                future.set_result(_Spooled(rest[0]))
            else:
                future.set_exception(_raised_here(*rest))
        failure = ModelLoadError(
            f"The encoder process for {self.name} stopped unexpectedly (out of memory?); "
            "run again, with a smaller --batch-size or --no-encoder-process."
        )
        with self._lock:
            self._failure = failure
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(failure)

    def _reader_settles_soon(self) -> None:
        """After a send that failed: the child is gone, so the reader is about to fail
        every pending call; wait for it so the caller's future is settled."""
        if self._reader is not None:
            self._reader.join(_JOIN_SECONDS)


def _raised_here(exc: BaseException, child_traceback: str) -> BaseException:
    """The child's error, to raise in this process, its traceback attached as the cause."""
    exc.__cause__ = ChildTraceback(f'\n"""\n{child_traceback}"""')
    return exc
