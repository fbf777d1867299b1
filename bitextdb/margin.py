"""Margin scoring and one-to-one selection on plain arrays (no I/O).

The semantics every other module and the tests share:

- cosines are float64 dot products of the stored float32 unit vectors;
- a kNN list is ordered by (-cosine, id): ties go to the smaller sentence id;
- ``r`` is the mean cosine of a kNN list (0.0 for an empty list);
- ratio margin(x, y) = cos / max((r(x) + r(y)) / 2, MARGIN_EPS)  (Artetxe & Schwenk 2019);
- a sentence's candidate is the neighbour with the highest margin, the first in kNN order on ties;
- the greedy walk visits candidates by (-margin, src_id, tgt_id) and accepts a pair when
  neither side was accepted before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MARGIN_EPS = 1e-6
MarginFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def ratio_margin(cos: np.ndarray, r_x: np.ndarray, r_y: np.ndarray) -> np.ndarray:
    """``cos / ((r_x + r_y) / 2)``, the denominator clamped at ``MARGIN_EPS``."""
    return np.asarray(cos, dtype=np.float64) / np.maximum((r_x + r_y) / 2.0, MARGIN_EPS)


def distance_margin(cos: np.ndarray, r_x: np.ndarray, r_y: np.ndarray) -> np.ndarray:
    """``cos - (r_x + r_y) / 2``."""
    return np.asarray(cos, dtype=np.float64) - (r_x + r_y) / 2.0


def absolute_margin(cos: np.ndarray, r_x: np.ndarray, r_y: np.ndarray) -> np.ndarray:
    """The plain cosine."""
    return np.asarray(cos, dtype=np.float64) + 0.0 * (r_x + r_y)


MARGINS: dict[str, MarginFn] = {
    "ratio": ratio_margin,
    "distance": distance_margin,
    "absolute": absolute_margin,
}


def mean_cosines(cos: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Row means of padded kNN cosines ``(n, k)``, using only the first ``sizes[i]`` entries."""
    cos = np.asarray(cos, dtype=np.float64)
    valid = np.arange(cos.shape[1])[None, :] < np.asarray(sizes)[:, None]
    total = np.where(valid, cos, 0.0).sum(axis=1)
    return np.divide(total, sizes, out=np.zeros(len(sizes)), where=np.asarray(sizes) > 0)


def best_candidates(
    cos: np.ndarray,
    sizes: np.ndarray,
    r_self: np.ndarray,
    r_neighbours: np.ndarray,
    margin: MarginFn = ratio_margin,
) -> tuple[np.ndarray, np.ndarray]:
    """For padded kNN rows, the column of the best-margin neighbour and that margin.

    Rows with no neighbours get column -1 and margin -inf.
    """
    cos = np.asarray(cos, dtype=np.float64)
    n, k = cos.shape if cos.ndim == 2 else (0, 0)
    if n == 0 or k == 0:
        return np.full(n, -1, dtype=np.int64), np.full(n, -np.inf)
    scores = margin(cos, np.asarray(r_self)[:, None], np.asarray(r_neighbours))
    valid = np.arange(k)[None, :] < np.asarray(sizes)[:, None]
    scores = np.where(valid, scores, -np.inf)
    column = np.argmax(scores, axis=1)  # argmax returns the first maximum: kNN order on ties
    best = scores[np.arange(n), column]
    column = np.where(np.asarray(sizes) > 0, column, -1)
    return column.astype(np.int64), best


def greedy_one_to_one(
    src_ids: np.ndarray,
    tgt_ids: np.ndarray,
    scores: np.ndarray,
    threshold: float | None = None,
) -> np.ndarray:
    """Boolean mask of the pairs a greedy walk by (-score, src, tgt) accepts one-to-one."""
    src_ids = np.asarray(src_ids, dtype=np.int64)
    tgt_ids = np.asarray(tgt_ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((tgt_ids, src_ids, -scores))
    accepted = np.zeros(len(scores), dtype=bool)
    used_src: set[int] = set()
    used_tgt: set[int] = set()
    for i in order.tolist():
        if threshold is not None and scores[i] < threshold:
            break
        s, t = int(src_ids[i]), int(tgt_ids[i])
        if s in used_src or t in used_tgt:
            continue
        used_src.add(s)
        used_tgt.add(t)
        accepted[i] = True
    return accepted
