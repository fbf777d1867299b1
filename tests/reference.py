"""Reference (batch, brute-force) margin-mining algorithm used as a test oracle.

Written for clarity, not speed: everything is computed from the full float64 cosine matrix.
The incremental miner in :mod:`bitextdb` must reproduce these results exactly.

Semantics
---------
* Cosines are float64 dot products of the stored float32 (already L2-normalised) vectors.
* The kNN list of a sentence holds the ``min(k, m)`` sentences of the other side (of size ``m``)
  ordered by ``(-cos, id)``: highest cosine first, ties broken by the smaller id.
* ``r(x)`` is the mean of the cosines in x's kNN list (``0.0`` when the other side is empty).
* ``margin(x, y) = cos(x, y) / max((r(x) + r(y)) / 2, MARGIN_EPS)`` for ``y`` in ``N(x)``.
* The candidate of ``x`` is its neighbour with the highest margin; ties go to the neighbour that
  comes first in the kNN list.
* ``candidates`` is the union of both sides' candidate pairs, keyed ``(a_id, b_id)``.
* Greedy one-to-one acceptance walks the candidates sorted by ``(-margin, a_id, b_id)`` and
  accepts a pair when neither id was accepted before and the margin reaches the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MARGIN_EPS = 1e-6


@dataclass
class Side:
    """Mining result for one direction (the sentences of one side looking at the other side)."""

    ids: np.ndarray
    """int64 ids of this side's sentences, in the order given."""
    knn_ids: list[list[int]]
    """Per sentence, the ids of its k nearest sentences on the other side, best first."""
    knn_cos: list[list[float]]
    """Per sentence, the cosines matching ``knn_ids``."""
    r: np.ndarray
    """float64 mean of ``knn_cos`` per sentence (0.0 when the other side is empty)."""
    best_id: list[int | None]
    """Per sentence, the id of the highest-margin neighbour (None without neighbours)."""
    best_cos: list[float | None]
    """Per sentence, the cosine to ``best_id``."""
    best_margin: list[float | None]
    """Per sentence, the margin to ``best_id``."""


@dataclass
class Reference:
    """Full reference result for mining side A against side B."""

    a: Side
    b: Side
    candidates: dict[tuple[int, int], float]
    """``(a_id, b_id) -> margin``: union of both sides' best candidates."""
    accepted: list[tuple[int, int, float]]
    """Greedy one-to-one selection, in acceptance (margin-descending) order."""


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    """Return ``n`` random float32 row vectors of dimension ``d``, each L2-normalised."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    return (x / norms).astype(np.float32)


def cosine_matrix(a_vecs: np.ndarray, b_vecs: np.ndarray) -> np.ndarray:
    """Full ``(n_a, n_b)`` cosine matrix: float64 dot products of the float32 vectors."""
    a64 = np.asarray(a_vecs, dtype=np.float32).astype(np.float64)
    b64 = np.asarray(b_vecs, dtype=np.float32).astype(np.float64)
    if a64.ndim != 2 or b64.ndim != 2:
        raise ValueError("vectors must be 2-D arrays")
    return np.einsum("id,jd->ij", a64, b64)


def _knn(cos_row: np.ndarray, other_ids: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The ``min(k, m)`` nearest of the other side, sorted by ``(-cos, id)``."""
    order = sorted(range(len(other_ids)), key=lambda j: (-float(cos_row[j]), int(other_ids[j])))
    top = order[: min(k, len(other_ids))]
    return [int(other_ids[j]) for j in top], [float(cos_row[j]) for j in top]


def margin_score(cos: float, r_x: float, r_y: float) -> float:
    """``cos / max((r_x + r_y) / 2, MARGIN_EPS)``."""
    return float(cos) / max((float(r_x) + float(r_y)) / 2.0, MARGIN_EPS)


def _side_knn(
    ids: np.ndarray, other_ids: np.ndarray, cos: np.ndarray, k: int
) -> tuple[list[list[int]], list[list[float]], np.ndarray]:
    """kNN lists and r values for every row of ``cos`` (rows: this side, cols: other side)."""
    knn_ids: list[list[int]] = []
    knn_cos: list[list[float]] = []
    r = np.zeros(len(ids), dtype=np.float64)
    for i in range(len(ids)):
        nid, ncos = _knn(cos[i], other_ids, k)
        knn_ids.append(nid)
        knn_cos.append(ncos)
        r[i] = float(np.mean(np.asarray(ncos, dtype=np.float64))) if ncos else 0.0
    return knn_ids, knn_cos, r


def _side_best(
    knn_ids: list[list[int]],
    knn_cos: list[list[float]],
    r_self: np.ndarray,
    r_other: dict[int, float],
) -> tuple[list[int | None], list[float | None], list[float | None]]:
    """Per sentence, the neighbour with the highest margin (earliest in kNN order on ties)."""
    best_id: list[int | None] = []
    best_cos: list[float | None] = []
    best_margin: list[float | None] = []
    for i, (nids, ncos) in enumerate(zip(knn_ids, knn_cos, strict=True)):
        bid: int | None = None
        bcos: float | None = None
        bmargin: float | None = None
        for y, c in zip(nids, ncos, strict=True):
            m = margin_score(c, float(r_self[i]), r_other[y])
            if bmargin is None or m > bmargin:
                bid, bcos, bmargin = y, c, m
        best_id.append(bid)
        best_cos.append(bcos)
        best_margin.append(bmargin)
    return best_id, best_cos, best_margin


def greedy_accept(
    candidates: dict[tuple[int, int], float], threshold: float | None = None
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one selection over ``candidates`` sorted by ``(-margin, a_id, b_id)``."""
    ordered = sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    used_a: set[int] = set()
    used_b: set[int] = set()
    accepted: list[tuple[int, int, float]] = []
    for (a_id, b_id), margin in ordered:
        if a_id in used_a or b_id in used_b:
            continue
        if threshold is not None and margin < threshold:
            continue
        used_a.add(a_id)
        used_b.add(b_id)
        accepted.append((a_id, b_id, margin))
    return accepted


def reference_mine(
    a_ids: Sequence[int] | np.ndarray,
    a_vecs: np.ndarray,
    b_ids: Sequence[int] | np.ndarray,
    b_vecs: np.ndarray,
    k: int,
    threshold: float | None = None,
) -> Reference:
    """Brute-force margin mining of side A against side B.

    Args:
        a_ids: ids of the A sentences (distinct).
        a_vecs: float32 ``(n_a, d)`` L2-normalised vectors of the A sentences.
        b_ids: ids of the B sentences (distinct).
        b_vecs: float32 ``(n_b, d)`` L2-normalised vectors of the B sentences.
        k: neighbourhood size (``>= 1``).
        threshold: minimum margin for greedy acceptance (None: accept any margin).

    Returns:
        The :class:`Reference` result for both directions, the candidates and the accepted pairs.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    a_ids_arr = np.asarray(a_ids, dtype=np.int64).reshape(-1)
    b_ids_arr = np.asarray(b_ids, dtype=np.int64).reshape(-1)
    if len(set(a_ids_arr.tolist())) != len(a_ids_arr) or len(set(b_ids_arr.tolist())) != len(
        b_ids_arr
    ):
        raise ValueError("ids must be distinct within a side")
    d = _dim(a_vecs, b_vecs)
    a_arr = np.asarray(a_vecs, dtype=np.float32).reshape(len(a_ids_arr), d)
    b_arr = np.asarray(b_vecs, dtype=np.float32).reshape(len(b_ids_arr), d)

    cos = cosine_matrix(a_arr, b_arr)  # (n_a, n_b)

    a_knn_ids, a_knn_cos, a_r = _side_knn(a_ids_arr, b_ids_arr, cos, k)
    b_knn_ids, b_knn_cos, b_r = _side_knn(b_ids_arr, a_ids_arr, cos.T, k)

    r_a = {int(i): float(r) for i, r in zip(a_ids_arr, a_r, strict=True)}
    r_b = {int(i): float(r) for i, r in zip(b_ids_arr, b_r, strict=True)}

    a_best = _side_best(a_knn_ids, a_knn_cos, a_r, r_b)
    b_best = _side_best(b_knn_ids, b_knn_cos, b_r, r_a)

    side_a = Side(a_ids_arr, a_knn_ids, a_knn_cos, a_r, *a_best)
    side_b = Side(b_ids_arr, b_knn_ids, b_knn_cos, b_r, *b_best)

    candidates: dict[tuple[int, int], float] = {}
    for x, y, m in zip(a_ids_arr.tolist(), side_a.best_id, side_a.best_margin, strict=True):
        if y is not None and m is not None:
            candidates[(int(x), int(y))] = m
    for y, x, m in zip(b_ids_arr.tolist(), side_b.best_id, side_b.best_margin, strict=True):
        if x is not None and m is not None:
            candidates[(int(x), int(y))] = m

    return Reference(
        a=side_a,
        b=side_b,
        candidates=candidates,
        accepted=greedy_accept(candidates, threshold),
    )


def _dim(a_vecs: np.ndarray, b_vecs: np.ndarray) -> int:
    """Vector dimension shared by both sides (either side may be empty)."""
    a = np.asarray(a_vecs)
    b = np.asarray(b_vecs)
    if a.ndim == 2 and a.shape[0] > 0:
        return int(a.shape[1])
    if b.ndim == 2 and b.shape[0] > 0:
        return int(b.shape[1])
    if a.ndim == 2:
        return int(a.shape[1])
    if b.ndim == 2:
        return int(b.shape[1])
    return 0
