"""The blocked exact kNN against brute force, with awkward block sizes and many ties.

The lists are grouped and merged with torch ops on the engine's device; the numpy lexsorts
they replaced serve as references here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitextdb.knn import PAD_ID, BlockedKnn, TopK, _best, _group, merge_topk, row_dots
from tests.reference import random_unit


def brute(q: np.ndarray, q_ids: np.ndarray, b: np.ndarray, b_ids: np.ndarray, m: int) -> TopK:
    cos = q.astype(np.float64) @ b.astype(np.float64).T
    out = TopK.empty(len(q), m)
    for i in range(len(q)):
        order = sorted(range(len(b)), key=lambda j: (-cos[i, j], b_ids[j]))[:m]
        out.ids[i, : len(order)] = b_ids[order]
        out.cos[i, : len(order)] = cos[i, order]
    return out


def brute_exact(q: np.ndarray, b: np.ndarray, b_ids: np.ndarray, m: int) -> TopK:
    """Brute force on the cosines ``row_dots`` defines (bit-equal for equal vectors)."""
    n_q, n_b = len(q), len(b)
    cos = row_dots(q, np.repeat(np.arange(n_q), n_b), b, np.tile(np.arange(n_b), n_q))
    cos = cos.reshape(n_q, n_b)
    order = np.lexsort((np.broadcast_to(b_ids, cos.shape), -cos), axis=1)[:, :m]
    out = TopK.empty(n_q, m)
    out.ids[:, : order.shape[1]] = b_ids[order]
    out.cos[:, : order.shape[1]] = np.take_along_axis(cos, order, axis=1)
    return out


def lexsort_merge(a: TopK, b: TopK, m: int) -> TopK:
    """The numpy merge that the torch one replaced."""
    ids = np.concatenate([a.ids, b.ids], axis=1)
    cos = np.concatenate([a.cos, b.cos], axis=1)
    order = np.lexsort((ids, -cos), axis=-1)[:, :m]
    return TopK(np.take_along_axis(ids, order, axis=1), np.take_along_axis(cos, order, axis=1))


def lexsort_group(rows: np.ndarray, ids: np.ndarray, cos: np.ndarray, n: int, m: int) -> TopK:
    """The numpy grouping of (row, id, cos) entries that the torch one replaced."""
    out = TopK.empty(n, m)
    order = np.lexsort((ids, -cos, rows))
    rows, ids, cos = rows[order], ids[order], cos[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < m
    out.ids[rows[keep], rank[keep]] = ids[keep]
    out.cos[rows[keep], rank[keep]] = cos[keep]
    return out


# few distinct cosines, both zeros among them: ties everywhere, broken by id
TIED = np.array([0.75, 0.5, 0.0, -0.0, -0.25])


def run(q, q_ids, b, b_ids, m, chunk, block, dtype=None):  # type: ignore[no-untyped-def]
    engine = BlockedKnn(q_ids, q, m, device="cpu", query_block=block, dtype=dtype)
    reverse = []
    for lo in range(0, len(b), chunk):
        reverse.append(engine.add_chunk(b_ids[lo : lo + chunk], b[lo : lo + chunk]))
    rev = TopK(np.concatenate([r.ids for r in reverse]), np.concatenate([r.cos for r in reverse]))
    return engine.forward, rev


@pytest.mark.parametrize(("chunk", "block"), [(5, 17), (17, 5), (1000, 1000), (1, 3)])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_both_directions_equal_brute_force(chunk: int, block: int, dtype) -> None:  # type: ignore[no-untyped-def]
    q, b = random_unit(41, 12, 1), random_unit(37, 12, 2)
    q[5] = q[4]
    b[10:20] = b[9]  # ten identical base vectors: ties broken by id
    q_ids, b_ids = np.arange(100, 141), np.arange(37)[::-1].copy()
    forward, reverse = run(q, q_ids, b, b_ids, 4, chunk, block, dtype)
    want_fwd, want_rev = brute(q, q_ids, b, b_ids, 4), brute(b, b_ids, q, q_ids, 4)
    assert (forward.ids == want_fwd.ids).all()
    assert np.allclose(forward.cos, want_fwd.cos, atol=1e-12)
    assert (reverse.ids == want_rev.ids).all()
    assert np.allclose(reverse.cos, want_rev.cos, atol=1e-12)


def test_bars_skip_rows_nobody_can_enter() -> None:
    q, b = random_unit(10, 8, 3), random_unit(30, 8, 4)
    engine = BlockedKnn(np.arange(10), q, 3, device="cpu")
    bars = np.full(30, 2.0)  # no cosine beats 2: no reverse candidates at all
    bars[7] = -np.inf  # except for row 7, whose list is short
    rev = engine.add_chunk(np.arange(100, 130), b, bars)
    assert (rev.ids[np.arange(30) != 7] == PAD_ID).all()
    assert (rev.ids[7] != PAD_ID).all()


def test_fewer_base_rows_than_m() -> None:
    q, b = random_unit(4, 8, 5), random_unit(2, 8, 6)
    forward, reverse = run(q, np.arange(4), b, np.arange(10, 12), 5, 10, 10)
    assert (forward.sizes == 2).all()
    assert (reverse.sizes == 4).all()


def test_merge_and_row_dots() -> None:
    a = TopK(np.array([[1, 5, PAD_ID]]), np.array([[0.9, 0.5, -np.inf]]))
    b = TopK(np.array([[3, 2]]), np.array([[0.9, 0.7]]))
    merged = merge_topk(a, b, 3)
    assert merged.ids.tolist() == [[1, 3, 2]]
    x, y = random_unit(3, 8, 7), random_unit(4, 8, 8)
    got = row_dots(x, np.array([0, 2]), y, np.array([3, 1]))
    want = [x[0].astype(float) @ y[3].astype(float), x[2].astype(float) @ y[1].astype(float)]
    assert np.allclose(got, want, atol=1e-12)


def tied_lists(rng: np.random.Generator, n: int, width: int) -> tuple[TopK, TopK]:
    """Two disjoint best-first lists a row, of random lengths (padded), with tied cosines."""
    a, b = TopK.empty(n, width), TopK.empty(n, width)
    for i in range(n):
        ids = rng.choice(3 * width, 2 * width, replace=False)
        cos = rng.choice(TIED, 2 * width)
        for lists, part in ((a, slice(0, width)), (b, slice(width, None))):
            size = rng.integers(0, width + 1)
            part_ids, part_cos = ids[part][:size], cos[part][:size]
            order = np.lexsort((part_ids, -part_cos))
            lists.ids[i, :size], lists.cos[i, :size] = part_ids[order], part_cos[order]
    return a, b


@pytest.mark.parametrize(("width", "m"), [(4, 4), (5, 3), (3, 8), (17, 17), (40, 40), (40, 7)])
def test_merge_equals_numpy_lexsort(width: int, m: int) -> None:
    # widths past 32 take the sorting branch, shorter ones the counting one
    a, b = tied_lists(np.random.default_rng(width * 100 + m), 300, width)
    got, want = merge_topk(a, b, m), lexsort_merge(a, b, m)
    assert got.ids.shape == want.ids.shape
    assert (got.ids == want.ids).all()
    assert (got.cos == want.cos).all()


@pytest.mark.parametrize(("width", "m"), [(1, 1), (8, 4), (12, 12), (33, 5), (50, 60)])
def test_best_of_unsorted_rows_equals_numpy_lexsort(width: int, m: int) -> None:
    rng = np.random.default_rng(width + m)
    a, _ = tied_lists(rng, 300, width)
    shuffle = rng.permuted(np.tile(np.arange(width), (300, 1)), axis=1)
    ids = np.take_along_axis(a.ids, shuffle, axis=1)
    cos = np.take_along_axis(a.cos, shuffle, axis=1)
    got_ids, got_cos = _best(torch.from_numpy(ids), torch.from_numpy(cos), m)
    want = lexsort_merge(TopK(ids, cos), TopK.empty(300, 0), m)
    assert (got_ids.numpy()[:, :width] == want.ids).all()
    assert (got_cos.numpy()[:, :width] == want.cos).all()
    assert (got_ids.numpy()[:, width:] == PAD_ID).all()


@pytest.mark.parametrize("m", [1, 4, 17, 40])
def test_grouping_equals_numpy_lexsort(m: int) -> None:
    rng = np.random.default_rng(m)
    n_rows, n = 37, 700
    rows = rng.integers(0, 30, n)  # rows 30..36 get nothing
    ids = rng.permutation(10 * n)[:n]
    cos = rng.choice(TIED, n)
    got_ids, got_cos = _group(*(torch.from_numpy(x) for x in (rows, ids, cos)), n_rows, m)
    want = lexsort_group(rows, ids, cos, n_rows, m)
    assert (got_ids.numpy() == want.ids).all()
    assert (got_cos.numpy() == want.cos).all()


@pytest.mark.parametrize(
    ("chunk", "block", "m"), [(5, 17, 3), (17, 5, 4), (13, 7, 6), (60, 60, 40)]
)
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_many_exact_ties_both_directions(chunk: int, block: int, m: int, dtype) -> None:  # type: ignore[no-untyped-def]
    # 70 queries made of 5 distinct vectors, 55 base rows of 4: every list is settled by ids,
    # most rows are rescanned, and m = 40 takes the sorting branches
    rng = np.random.default_rng(m)
    q = random_unit(5, 6, 11)[rng.integers(0, 5, 70)]
    b = random_unit(4, 6, 12)[rng.integers(0, 4, 55)]
    q_ids, b_ids = rng.permutation(1000)[:70], rng.permutation(1000)[:55]
    forward, reverse = run(q, q_ids, b, b_ids, m, chunk, block, dtype)
    want_fwd, want_rev = brute_exact(q, b, b_ids, m), brute_exact(b, q, q_ids, m)
    assert (forward.ids == want_fwd.ids).all()
    assert (forward.cos == want_fwd.cos).all()
    assert (reverse.ids == want_rev.ids).all()
    assert (reverse.cos == want_rev.cos).all()


def test_random_vectors_equal_brute_force() -> None:
    q, b = random_unit(300, 16, 13), random_unit(250, 16, 14)
    q_ids, b_ids = np.arange(300), np.arange(1000, 1250)
    forward, reverse = run(q, q_ids, b, b_ids, 4, 100, 64)
    want_fwd, want_rev = brute_exact(q, b, b_ids, 4), brute_exact(b, q, q_ids, 4)
    assert (forward.ids == want_fwd.ids).all()
    assert (forward.cos == want_fwd.cos).all()
    assert (reverse.ids == want_rev.ids).all()
    assert (reverse.cos == want_rev.cos).all()


def test_forward_is_a_host_copy() -> None:
    engine = BlockedKnn(np.arange(6), random_unit(6, 8, 9), 2, device="cpu")
    engine.add_chunk(np.arange(10, 13), random_unit(3, 8, 10))
    first = engine.forward
    kept = first.ids.copy()
    engine.add_chunk(np.arange(20, 26), random_unit(6, 8, 11))
    assert (first.ids == kept).all()
    assert engine.forward is not first
