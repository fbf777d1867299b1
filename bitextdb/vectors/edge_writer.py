"""Qdrant Edge's upserts in a process of their own, for the length of an ingest.

Qdrant Edge keeps the interpreter lock while it stores points (``benchmarks/storage.py``
measures how little a Python thread runs meanwhile), so in the ingesting process its
upserts take turns with SQL, hashing and feeding the encoder instead of running beside
them. A shard may be open in one process only: :class:`EdgeWriter` starts the child at
once (so its imports overlap the parent's work), and at the first upsert closes the
parent's shards and has the child open them; the child then does the upserts (the flat
mirror included), and on :meth:`EdgeWriter.close` it flushes and closes them; the parent's
index opens them again when next used.

The child is ``python -m bitextdb.vectors.edge_writer``, not a ``multiprocessing`` child:
those import the parent's main module first (the command line, with torch: seconds), this
one imports Qdrant Edge and numpy only. Messages are pickles over its stdin and stdout
(``multiprocessing.connection``); each batch's vectors (25 MB for 8,192 of LaBSE's size)
go through a ``.npy`` file in a folder of the store's own rather than through the pipe.
"""

from __future__ import annotations

import collections
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BitextDBError, StoreUnavailableError
from .edge import WRITER_LOCK, EdgeIndex

_LOST = (
    "The Qdrant Edge writer process stopped unexpectedly (out of memory?); run again (the "
    "sentences it did not store are encoded first), or with --no-index-process."
)


class EdgeWriter:
    """Upserts into ``index``'s shards from a child process until :meth:`close`.

    ``upsert`` returns once the points are stored (it waits without the interpreter lock),
    so a caller that marks them indexed afterwards keeps the ingest's crash safety.
    ``submit`` and ``confirm`` split it for a pipeline: one thread hands batches over while
    another waits for them to be stored, in order, so the child always has the next batch.
    The parent may use ``index`` until the first upsert, and not again until :meth:`close`.
    """

    def __init__(self, index: EdgeIndex) -> None:
        self._index: EdgeIndex | None = index  # until the shards are handed over
        index.root.mkdir(parents=True, exist_ok=True)
        for stale in index.root.glob(".writer-*"):  # left by a writer whose parent was killed
            shutil.rmtree(stale, ignore_errors=True)
        self._spool = Path(tempfile.mkdtemp(prefix=".writer-", dir=index.root))
        self._count = 0
        self._pending: collections.deque[Path] = collections.deque()  # submitted, unconfirmed
        # the package's own folder first: a checkout that is not installed works too
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        child = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert child.stdin is not None and child.stdout is not None
        self._to = Connection(os.dup(child.stdin.fileno()), readable=False)
        self._from = Connection(os.dup(child.stdout.fileno()), writable=False)
        child.stdin.close()
        child.stdout.close()
        self._child: subprocess.Popen[bytes] | None = child

    def _hand_over(self) -> None:
        """Close the parent's shards and have the child open them (once)."""
        index, self._index = self._index, None
        if index is not None:
            index.close()
            self._call("open", str(index.root), index.options())

    def upsert(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store the points in the child; returns when they are stored."""
        self.submit(lang, ids, vectors)
        self.confirm()

    def submit(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Hand the points to the child, which stores them after those handed earlier;
        :meth:`confirm` says when. Called from one thread at a time."""
        self._hand_over()
        self._count += 1
        path = self._spool / f"{self._count}.npy"
        np.save(path, np.ascontiguousarray(vectors, dtype=np.float32))
        self._pending.append(path)
        self._send("upsert", lang, np.asarray(ids, dtype=np.int64), str(path))

    def confirm(self) -> None:
        """Wait until the oldest submitted batch is stored; raise what storing it raised."""
        path = self._pending.popleft()
        try:
            self._receive()
        finally:
            path.unlink(missing_ok=True)

    def _call(self, *message: Any) -> None:
        self._send(*message)
        self._receive()

    def _send(self, *message: Any) -> None:
        if self._child is None:
            raise StoreUnavailableError("The Qdrant Edge writer process was closed.")
        try:
            self._to.send(message)
        except OSError as exc:
            raise StoreUnavailableError(_LOST) from exc

    def _receive(self) -> None:
        try:
            failure = self._from.recv()
        except (EOFError, OSError) as exc:
            raise StoreUnavailableError(_LOST) from exc
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Flush and close the child's shards and stop it."""
        child, self._child = self._child, None
        if child is None:
            return
        try:
            self._to.send(("close",))
            for _ in range(len(self._pending) + 1):  # what an ingest that failed left, then close
                self._from.recv()
        except (EOFError, OSError):
            pass  # a child that is gone has nothing left to flush
        finally:
            self._to.close()
            self._from.close()
            child.wait()
            shutil.rmtree(self._spool, ignore_errors=True)

    def __enter__(self) -> EdgeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(inbox: Connection, outbox: Connection) -> None:
    """The child: apply messages until ``close`` or the parent goes away."""
    index: EdgeIndex | None = None
    try:
        while True:
            try:
                kind, *args = inbox.recv()
            except EOFError:
                return
            failure: BaseException | None = None
            try:
                if kind == "open":
                    root = Path(args[0])
                    # held until this process exits: see EdgeIndex._wait_for_writer
                    lock = os.open(root / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    index = EdgeIndex(root, **args[1])
                    index.is_writer = True
                elif kind == "upsert":
                    assert index is not None, "the writer process has no index"
                    lang, ids, path = args
                    # mapped, not copied: the parent removes the file only after our reply
                    index.upsert(lang, ids, np.load(path, mmap_mode="r"))
                elif kind == "close":
                    if index is not None:
                        index.close()
                        index = None
                    outbox.send(None)
                    return
            except BitextDBError as exc:
                failure = exc
            except Exception as exc:  # the binding raises plain exceptions
                failure = StoreUnavailableError(f"The Qdrant Edge writer failed: {exc}")
            outbox.send(failure)
    finally:
        if index is not None:
            index.close()


def _main() -> None:
    # Ctrl-C reaches the whole process group: the parent decides, then closes this child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    # whatever else the child prints goes to stderr, not into the messages
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _serve(inbox, outbox)


if __name__ == "__main__":
    _main()
