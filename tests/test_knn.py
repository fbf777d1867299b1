"""The blocked exact kNN against brute force, with awkward block sizes and many ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitextdb.knn import PAD_ID, BlockedKnn, TopK, merge_topk, row_dots
from tests.reference import random_unit


def brute(q: np.ndarray, q_ids: np.ndarray, b: np.ndarray, b_ids: np.ndarray, m: int) -> TopK:
    cos = q.astype(np.float64) @ b.astype(np.float64).T
    out = TopK.empty(len(q), m)
    for i in range(len(q)):
        order = sorted(range(len(b)), key=lambda j: (-cos[i, j], b_ids[j]))[:m]
        out.ids[i, : len(order)] = b_ids[order]
        out.cos[i, : len(order)] = cos[i, order]
    return out


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
