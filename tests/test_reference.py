"""Hand-computed checks of the reference margin-mining oracle in :mod:`tests.reference`."""

from __future__ import annotations

import numpy as np
import pytest

try:  # tests/ as a package (tests/__init__.py) or rootdir on sys.path
    from tests.reference import MARGIN_EPS, cosine_matrix, random_unit, reference_mine
except ImportError:  # pytest's default rootdir-less "prepend" import of tests/
    from reference import MARGIN_EPS, cosine_matrix, random_unit, reference_mine


def vecs(*rows: tuple[float, ...]) -> np.ndarray:
    """Float32 matrix from literal rows (callers pass unit vectors)."""
    return np.asarray(rows, dtype=np.float32)


def approx(x: float) -> object:
    """Tolerance for values derived from float32-rounded inputs such as 0.6 / 0.8."""
    return pytest.approx(x, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------------
# Basic 2-D example
#   A: 10=(1,0)  11=(0,1)
#   B: 20=(1,0)  21=(0.6,0.8)  22=(0,1)
#   cos(10, B) = [1, 0.6, 0]     cos(11, B) = [0, 0.8, 1]
# k = 2:
#   N(10) = [20 (1), 21 (0.6)]  r = 0.8      N(11) = [22 (1), 21 (0.8)]  r = 0.9
#   N(20) = [10 (1), 11 (0)]    r = 0.5      N(21) = [11 (0.8), 10 (0.6)] r = 0.7
#   N(22) = [11 (1), 10 (0)]    r = 0.5
# margins:
#   10->20: 1/0.65   10->21: 0.6/0.75 = 0.8       => best 20
#   11->22: 1/0.7    11->21: 0.8/0.8 = 1.0        => best 22
#   20->10: 1/0.65   20->11: 0                    => best 10
#   21->11: 1.0      21->10: 0.8                  => best 11
#   22->11: 1/0.7    22->10: 0                    => best 11
# candidates: (10,20)=1/0.65, (11,22)=1/0.7, (11,21)=1.0
# greedy: accept (10,20), (11,22); (11,21) conflicts on 11.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def basic():
    a = vecs((1.0, 0.0), (0.0, 1.0))
    b = vecs((1.0, 0.0), (0.6, 0.8), (0.0, 1.0))
    return reference_mine([10, 11], a, [20, 21, 22], b, k=2)


def test_basic_knn(basic) -> None:
    assert basic.a.knn_ids == [[20, 21], [22, 21]]
    assert basic.a.knn_cos[0] == [approx(1.0), approx(0.6)]
    assert basic.a.knn_cos[1] == [approx(1.0), approx(0.8)]
    assert basic.b.knn_ids == [[10, 11], [11, 10], [11, 10]]
    assert basic.b.knn_cos[1] == [approx(0.8), approx(0.6)]


def test_basic_ids_and_r(basic) -> None:
    assert basic.a.ids.dtype == np.int64
    assert basic.a.ids.tolist() == [10, 11]
    assert basic.b.ids.tolist() == [20, 21, 22]
    assert basic.a.r.dtype == np.float64
    assert basic.a.r.tolist() == [approx(0.8), approx(0.9)]
    assert basic.b.r.tolist() == [approx(0.5), approx(0.7), approx(0.5)]


def test_basic_best(basic) -> None:
    assert basic.a.best_id == [20, 22]
    assert basic.a.best_cos == [approx(1.0), approx(1.0)]
    assert basic.a.best_margin == [approx(1 / 0.65), approx(1 / 0.7)]
    assert basic.b.best_id == [10, 11, 11]
    assert basic.b.best_margin == [approx(1 / 0.65), approx(1.0), approx(1 / 0.7)]


def test_basic_candidates_and_greedy(basic) -> None:
    assert set(basic.candidates) == {(10, 20), (11, 22), (11, 21)}
    assert basic.candidates[(10, 20)] == approx(1 / 0.65)
    assert basic.candidates[(11, 22)] == approx(1 / 0.7)
    assert basic.candidates[(11, 21)] == approx(1.0)
    assert [(x, y) for x, y, _ in basic.accepted] == [(10, 20), (11, 22)]
    assert basic.accepted[0][2] == approx(1 / 0.65)


def test_basic_threshold() -> None:
    a = vecs((1.0, 0.0), (0.0, 1.0))
    b = vecs((1.0, 0.0), (0.6, 0.8), (0.0, 1.0))
    ref = reference_mine([10, 11], a, [20, 21, 22], b, k=2, threshold=1.45)
    assert [(x, y) for x, y, _ in ref.accepted] == [(10, 20)]  # 1/0.7 = 1.4286 < 1.45
    m = ref.candidates[(11, 22)]  # 1/0.7 up to float32 rounding of 0.8
    ref = reference_mine([10, 11], a, [20, 21, 22], b, k=2, threshold=m)
    assert [(x, y) for x, y, _ in ref.accepted] == [(10, 20), (11, 22)]  # >= is inclusive
    ref = reference_mine([10, 11], a, [20, 21, 22], b, k=2, threshold=np.nextafter(m, np.inf))
    assert [(x, y) for x, y, _ in ref.accepted] == [(10, 20)]
    ref = reference_mine([10, 11], a, [20, 21, 22], b, k=2, threshold=2.0)
    assert ref.accepted == []
    assert len(ref.candidates) == 3  # the threshold does not affect candidates


# --------------------------------------------------------------------------------------------
# Exact ties. All coordinates are dyadic, so every cosine, r and margin below is exact.
#   A: 8 = x  = (1, 0, 0, 0)          3 = x2 = (.5, -.5, -.5, -.5)
#   B: 9 = y1 = (1, 0, 0, 0)          2 = y2 = (.5, .5, .5, .5)
#   cos(x, y1) = 1, cos(x, y2) = .5, cos(x2, y1) = .5, cos(x2, y2) = -.5
# k = 2 (everything is everyone's neighbour):
#   N(x)  = [9 (1), 2 (.5)]   r = .75      N(x2) = [9 (.5), 2 (-.5)]  r = 0
#   N(y1) = [8 (1), 3 (.5)]   r = .75      N(y2) = [8 (.5), 3 (-.5)]  r = 0
# margins:
#   x ->y1: 1/.75 = 4/3      x ->y2: .5/.375 = 4/3    tie => earliest in N(x): 9 (not id 2)
#   x2->y1: .5/.375 = 4/3    x2->y2: -.5/max(0, eps) = -5e5                   => 9
#   y1->x : 4/3              y1->x2: .5/.375 = 4/3    tie => earliest in N(y1): 8 (not id 3)
#   y2->x : .5/.375 = 4/3    y2->x2: -5e5                                     => 8
# candidates: (8,9), (3,9), (8,2), all 4/3; greedy order by (a_id, b_id): (3,9), (8,2), (8,9)
# --------------------------------------------------------------------------------------------


def test_margin_tie_goes_to_earliest_in_knn_order() -> None:
    a = vecs((1.0, 0.0, 0.0, 0.0), (0.5, -0.5, -0.5, -0.5))
    b = vecs((1.0, 0.0, 0.0, 0.0), (0.5, 0.5, 0.5, 0.5))
    ref = reference_mine([8, 3], a, [9, 2], b, k=2)

    assert ref.a.knn_ids == [[9, 2], [9, 2]]
    assert ref.a.knn_cos == [[1.0, 0.5], [0.5, -0.5]]
    assert ref.b.knn_ids == [[8, 3], [8, 3]]
    assert ref.b.knn_cos == [[1.0, 0.5], [0.5, -0.5]]
    assert ref.a.r.tolist() == [0.75, 0.0]
    assert ref.b.r.tolist() == [0.75, 0.0]

    assert ref.a.best_id == [9, 9]
    assert ref.a.best_cos == [1.0, 0.5]
    assert ref.a.best_margin == [4 / 3, 4 / 3]
    assert ref.b.best_id == [8, 8]
    assert ref.b.best_cos == [1.0, 0.5]

    assert ref.candidates == {(8, 9): 4 / 3, (3, 9): 4 / 3, (8, 2): 4 / 3}
    assert ref.accepted == [(3, 9, 4 / 3), (8, 2, 4 / 3)]


def test_cosine_tie_broken_by_smaller_id() -> None:
    # B ids 5 and 3 have bit-identical vectors; 3 must come first whatever the input order.
    a = vecs((1.0, 0.0))
    b = vecs((0.6, 0.8), (0.0, 1.0), (0.6, 0.8))
    ref = reference_mine([1], a, [5, 7, 3], b, k=3)
    assert ref.a.knn_ids == [[3, 5, 7]]
    assert ref.a.knn_cos[0][0] == ref.a.knn_cos[0][1]
    # 3 and 5 have identical r, so their margins tie too: the earliest (3) wins.
    assert ref.a.best_id == [3]
    ref = reference_mine([1], a, [5, 7, 3], b, k=1)
    assert ref.a.knn_ids == [[3]]


def test_identical_a_vectors_tie_on_b_side() -> None:
    a = vecs((0.0, 1.0), (0.0, 1.0))
    b = vecs((0.0, 1.0))
    ref = reference_mine([42, 17], a, [0], b, k=1)
    assert ref.b.knn_ids == [[17]]
    assert ref.b.best_id == [17]
    # both A sentences choose 0 with the same margin: the greedy walk takes a_id 17 first
    assert ref.candidates == {(42, 0): 1.0, (17, 0): 1.0}
    assert ref.accepted == [(17, 0, 1.0)]


def test_margin_denominator_is_clamped() -> None:
    # cos = -1 and r = -1 on both sides: (r_x + r_y) / 2 = -1 is clamped to MARGIN_EPS.
    a = vecs((1.0, 0.0))
    b = vecs((-1.0, 0.0))
    ref = reference_mine([1], a, [2], b, k=1)
    assert ref.a.r.tolist() == [-1.0]
    assert ref.b.r.tolist() == [-1.0]
    assert ref.a.best_margin == [-1.0 / MARGIN_EPS]
    assert ref.candidates == {(1, 2): -1.0 / MARGIN_EPS}
    assert ref.accepted == [(1, 2, -1.0 / MARGIN_EPS)]
    assert reference_mine([1], a, [2], b, k=1, threshold=0.0).accepted == []


def test_orthogonal_margin_is_zero() -> None:
    a = vecs((1.0, 0.0))
    b = vecs((0.0, 1.0))
    ref = reference_mine([1], a, [2], b, k=3)
    assert ref.a.r.tolist() == [0.0]
    assert ref.candidates == {(1, 2): 0.0}


def test_conflict_two_a_want_same_b() -> None:
    # A: 1=(1,0), 2=(0.6,0.8); B: 10=(1,0). k = 1.
    # r(1) = 1, r(2) = 0.6, r(10) = 1 (its nearest is 1).
    # margin(1,10) = 1 / 1 = 1; margin(2,10) = 0.6 / 0.8 = 0.75. Only (1,10) is accepted.
    a = vecs((1.0, 0.0), (0.6, 0.8))
    b = vecs((1.0, 0.0))
    ref = reference_mine([1, 2], a, [10], b, k=1)
    assert ref.a.best_id == [10, 10]
    assert ref.a.best_margin == [approx(1.0), approx(0.75)]
    assert ref.b.best_id == [1]
    assert ref.candidates == {(1, 10): approx(1.0), (2, 10): approx(0.75)}
    assert [(x, y) for x, y, _ in ref.accepted] == [(1, 10)]


def test_greedy_second_choice_not_considered() -> None:
    # 2's only candidate is taken; greedy does not fall back to 2's second neighbour.
    a = vecs((1.0, 0.0), (0.6, 0.8))
    b = vecs((1.0, 0.0), (-0.6, 0.8))
    ref = reference_mine([1, 2], a, [10, 11], b, k=1)
    # r(1)=1, r(2)=0.6, r(10)=1, r(11)= cos(11,2) = -0.36+0.64 = 0.28
    assert ref.a.best_id == [10, 10]
    assert ref.b.best_id == [1, 2]
    assert ref.candidates[(2, 11)] == approx(0.28 / ((0.6 + 0.28) / 2))
    assert [(x, y) for x, y, _ in ref.accepted] == [(1, 10), (2, 11)]


def test_k_larger_than_other_side() -> None:
    a = vecs((1.0, 0.0), (0.0, 1.0), (0.6, 0.8))
    b = vecs((0.0, 1.0), (1.0, 0.0))
    ref = reference_mine([1, 2, 3], a, [7, 8], b, k=10)
    assert [len(x) for x in ref.a.knn_ids] == [2, 2, 2]
    assert [len(x) for x in ref.b.knn_ids] == [3, 3]
    assert ref.a.knn_ids[2] == [7, 8]  # 0.8 > 0.6
    assert ref.b.knn_ids == [[2, 3, 1], [1, 3, 2]]
    # r averages over the available neighbours only
    assert ref.a.r[0] == approx(0.5)
    assert ref.b.r[0] == approx((1.0 + 0.8 + 0.0) / 3)


@pytest.mark.parametrize("empty", ["a", "b"])
def test_one_side_empty(empty: str) -> None:
    full = vecs((1.0, 0.0), (0.0, 1.0))
    none = np.zeros((0, 2), dtype=np.float32)
    if empty == "b":
        ref = reference_mine([1, 2], full, [], none, k=3)
        full_side, empty_side = ref.a, ref.b
    else:
        ref = reference_mine([], none, [1, 2], full, k=3)
        full_side, empty_side = ref.b, ref.a
    assert full_side.knn_ids == [[], []]
    assert full_side.knn_cos == [[], []]
    assert full_side.r.tolist() == [0.0, 0.0]
    assert full_side.best_id == [None, None]
    assert full_side.best_cos == [None, None]
    assert full_side.best_margin == [None, None]
    assert empty_side.ids.shape == (0,)
    assert empty_side.r.shape == (0,)
    assert empty_side.knn_ids == []
    assert ref.candidates == {}
    assert ref.accepted == []


def test_both_sides_empty() -> None:
    none = np.zeros((0, 4), dtype=np.float32)
    ref = reference_mine([], none, [], none, k=2)
    assert ref.candidates == {}
    assert ref.accepted == []


def test_invalid_arguments() -> None:
    a = vecs((1.0, 0.0))
    with pytest.raises(ValueError):
        reference_mine([1], a, [2], a, k=0)
    with pytest.raises(ValueError):
        reference_mine([1, 1], vecs((1.0, 0.0), (0.0, 1.0)), [2], a, k=1)


def test_cosines_are_float64_of_float32() -> None:
    a = random_unit(5, 8, seed=1)
    b = random_unit(6, 8, seed=2)
    ref = reference_mine(list(range(5)), a, list(range(100, 106)), b, k=3)
    expected = a.astype(np.float64) @ b.astype(np.float64).T
    np.testing.assert_allclose(cosine_matrix(a, b), expected, rtol=0, atol=1e-15)
    for i, (nids, ncos) in enumerate(zip(ref.a.knn_ids, ref.a.knn_cos, strict=True)):
        row = expected[i]
        order = sorted(range(6), key=lambda j: (-row[j], j))[:3]
        assert nids == [100 + j for j in order]
        np.testing.assert_allclose(ncos, row[order], rtol=0, atol=1e-15)
        assert ref.a.r[i] == approx(float(np.mean(row[order])))


def test_candidates_union_and_margin_consistency() -> None:
    a = random_unit(30, 6, seed=3)
    b = random_unit(25, 6, seed=4)
    ref = reference_mine(list(range(30)), a, list(range(1000, 1025)), b, k=4)
    from_a = {
        (x, y): m
        for x, y, m in zip(ref.a.ids.tolist(), ref.a.best_id, ref.a.best_margin, strict=True)
    }
    from_b = {
        (x, y): m
        for y, x, m in zip(ref.b.ids.tolist(), ref.b.best_id, ref.b.best_margin, strict=True)
    }
    assert set(ref.candidates) == set(from_a) | set(from_b)
    for pair in set(from_a) & set(from_b):
        assert from_a[pair] == from_b[pair]  # the same pair has bit-identical margins
    accepted_a = [x for x, _, _ in ref.accepted]
    accepted_b = [y for _, y, _ in ref.accepted]
    assert len(set(accepted_a)) == len(accepted_a)
    assert len(set(accepted_b)) == len(accepted_b)
    margins = [m for _, _, m in ref.accepted]
    assert margins == sorted(margins, reverse=True)


def test_random_unit() -> None:
    x = random_unit(7, 5, seed=0)
    assert x.shape == (7, 5)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x.astype(np.float64), axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(x, random_unit(7, 5, seed=0))
    assert not np.array_equal(x, random_unit(7, 5, seed=1))
