"""Helpers shared by the benchmarks: planted corpora, a fast numpy reference, memory."""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import platform
import resource
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bitextdb.margin import greedy_one_to_one, ratio_margin


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} | {cpu} | {torch.get_num_threads()} threads | {gpu}"


class InstantEncoder:
    """Unit vectors of the database's size, ready at once (a stand-in for a fast GPU)."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim, self.device = name, dim, "cpu"
        rng = np.random.default_rng(0)
        pool = rng.standard_normal((8192, dim)).astype(np.float32)
        self.pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.arange(len(texts)) % len(self.pool)
        return self.pool[rows]

    def start(self, texts: Sequence[str]) -> Callable[[], np.ndarray]:
        vectors = self.encode(texts)
        return lambda: vectors

    def close(self) -> None:
        pass

    def check_dimension(self, expected: int) -> None:
        pass


class FullCollections:
    """Times of the cycle collector's full (generation 2) collections since :meth:`reset`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds.append(time.perf_counter() - self._started)

    def reset(self) -> None:
        self.seconds = []


def rss_mb(field: str = "VmRSS") -> float:
    """A resident-memory figure of this process from /proc/self/status (Linux), in MB:
    ``VmRSS`` (all), ``RssAnon`` (the process's own memory) or ``RssFile`` (mapped files,
    page cache the kernel can take back)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class AnonPeak:
    """The peak of ``RssAnon`` (which the kernel keeps no high-water mark of), sampled
    every 0.1 s by a daemon thread; ``reset()`` starts a new phase."""

    def __init__(self) -> None:
        self.peak = rss_mb("RssAnon")
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb("RssAnon"))
            time.sleep(0.1)

    def reset(self) -> None:
        self.peak = rss_mb("RssAnon")


def memory_cgroup(name: str) -> Path:
    """Where :func:`join_memory_cgroup` makes its group (cgroup v2, else v1's memory tree)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    return Path("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory") / name


def join_memory_cgroup(limit_mb: int, name: str) -> None:
    """Move this process into a new memory cgroup with a hard limit (root; cgroup v2 or
    v1). Page cache counts against it too, so a run that fits is one whose own memory fits
    and whose store pages the kernel could take back. Only what is allocated after the move
    is charged (the start-up imports are not)."""
    limit = str(limit_mb << 20)
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    group = memory_cgroup(name)
    try:
        group.mkdir(exist_ok=True)
        if v2:
            (group / "memory.max").write_text(limit)
            (group / "memory.swap.max").write_text("0")
        else:
            (group / "memory.limit_in_bytes").write_text(limit)
            memsw = group / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(limit)
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        raise SystemExit(f"Cannot set a memory limit here ({exc}); run as root on Linux.") from exc


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(target, *args):  # type: ignore[no-untyped-def]
    """Run ``target(*args, conn)`` in a fresh (spawned) process; return what it sends.
    A child that ends without sending raises ``ChildProcessError`` (-9: killed)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    child.close()  # so that a child that dies ends recv() with EOFError
    try:
        result = parent.recv()
    except EOFError:
        proc.join()
        raise ChildProcessError(f"exit code {proc.exitcode}") from None
    proc.join()
    return result


@contextmanager
def timed(results: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def agreement(got: set, want: set) -> float:
    """Jaccard agreement of two sets of pairs (1.0 when equal)."""
    return len(got & want) / max(1, len(got | want))


def unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def planted(n_a: int, n_b: int, n_pairs: int, dim: int, noise: float, seed: int):  # type: ignore[no-untyped-def]
    """Sides A and B where A[i] and B[perm[i]] (i < n_pairs) are noisy copies."""
    rng = np.random.default_rng(seed)
    a = unit(rng.standard_normal((n_a, dim)))
    b = unit(rng.standard_normal((n_b, dim)))
    perm = rng.permutation(n_b)[:n_pairs]
    b[perm] = unit(a[:n_pairs] + noise * rng.standard_normal((n_pairs, dim)) / np.sqrt(dim))
    return a, b, perm


def numpy_knn(x: np.ndarray, y: np.ndarray, k: int, block: int = 4096):  # type: ignore[no-untyped-def]
    """Exact top-k of each x among y (float32 matmul, argpartition), like bitext_mining.py."""
    k = min(k, len(y))
    idx = np.empty((len(x), k), dtype=np.int64)
    sim = np.empty((len(x), k), dtype=np.float32)
    for start in range(0, len(x), block):
        s = x[start : start + block] @ y.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1)
        idx[start : start + block] = np.take_along_axis(part, order, axis=1)
        sim[start : start + block] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def numpy_mine(a: np.ndarray, b: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The reference batch algorithm on row indices: greedy one-to-one (a_row, b_row)."""
    return set(numpy_mine_scored(a, b, k))


def numpy_mine_scored(a: np.ndarray, b: np.ndarray, k: int) -> dict[tuple[int, int], float]:
    """:func:`numpy_mine` with each accepted pair's margin."""
    fwd_idx, fwd_sim = numpy_knn(a, b, k)
    bwd_idx, bwd_sim = numpy_knn(b, a, k)
    r_a = fwd_sim.mean(axis=1).astype(np.float64)
    r_b = bwd_sim.mean(axis=1).astype(np.float64)
    fwd_margin = ratio_margin(fwd_sim, r_a[:, None], r_b[fwd_idx])
    bwd_margin = ratio_margin(bwd_sim, r_b[:, None], r_a[bwd_idx])
    fa = np.argmax(fwd_margin, axis=1)
    fb = np.argmax(bwd_margin, axis=1)
    rows_a, rows_b = np.arange(len(a)), np.arange(len(b))
    src = np.concatenate([rows_a, bwd_idx[rows_b, fb]])
    tgt = np.concatenate([fwd_idx[rows_a, fa], rows_b])
    score = np.concatenate([fwd_margin[rows_a, fa], bwd_margin[rows_b, fb]])
    pairs = np.unique(np.stack([src, tgt, np.round(score, 12)], axis=1), axis=0)
    keep = greedy_one_to_one(
        pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), pairs[:, 2]
    )
    return {(int(s), int(t)): float(m) for s, t, m in pairs[keep]}


class Stopwatch:
    """Wraps functions of a module and adds up the seconds spent in them."""

    def __init__(self, module: Any, names: list[str]) -> None:
        self.seconds = 0.0
        for name in names:
            setattr(module, name, self._timed(getattr(module, name)))

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def instant_ingest(
    home: Path, model: Path, dim: int, path: Path, lang: str, **options: Any
) -> tuple[float, dict[str, Any]]:
    """Ingest ``path`` into a fresh home at ``home`` with vectors ready at once
    (:class:`InstantEncoder`), no mining: the seconds it took and the ingest report."""
    import shutil

    import bitextdb

    shutil.rmtree(home, ignore_errors=True)
    db = bitextdb.init(home, model=str(model), device="cpu", index_process=False)
    db._encoder = InstantEncoder(str(model), dim)  # type: ignore[assignment]
    started = time.perf_counter()
    result = db.ingest(str(path), lang, mine=False, **options)
    took = time.perf_counter() - started
    db.close()
    return took, result["ingested"][0]


def corpus_arguments(
    description: str, *, size: int, dim: int, share: str, size_help: str = "sentences a side"
) -> argparse.ArgumentParser:
    """A parser with the options of the benchmarks that mine planted corpora and change a
    share of them: ``--size``, ``--dim``, ``--k`` and ``--share`` (default 1 %)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=size, help=size_help)
    parser.add_argument("--dim", type=int, default=dim)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--share", type=float, default=0.01, help=share)
    return parser


def seconds_to_mine(db: Any) -> float:
    """Mine ``db`` (a :class:`bitextdb.BitextDB`); returns the seconds it took."""
    started = time.perf_counter()
    db.mine()
    return time.perf_counter() - started
