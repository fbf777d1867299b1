"""Exact k-nearest-neighbour search by blocked matrix products (torch; GPU when present).

Candidates are chosen in the fast dtype (float32 on CPU, float16/bfloat16 on GPU) with some
slack, then re-scored in float64 so the result is the exact (-cosine, id) order that
``margin`` defines, whatever the block sizes or device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAD_ID = np.iinfo(np.int64).max


@dataclass
class TopK:
    """Padded best-first lists: ``ids`` (n, m) with ``PAD_ID`` and ``cos`` (n, m) with -inf."""

    ids: np.ndarray
    cos: np.ndarray

    @classmethod
    def empty(cls, n: int, m: int) -> TopK:
        return cls(np.full((n, m), PAD_ID, dtype=np.int64), np.full((n, m), -np.inf))

    @property
    def sizes(self) -> np.ndarray:
        return (self.ids != PAD_ID).sum(axis=1)

    def take(self, rows: np.ndarray) -> TopK:
        return TopK(self.ids[rows], self.cos[rows])


def merge_topk(a: TopK, b: TopK, m: int) -> TopK:
    """Row-wise union of two (disjoint) lists, keeping the best ``m`` by (-cos, id)."""
    ids = np.concatenate([a.ids, b.ids], axis=1)
    cos = np.concatenate([a.cos, b.cos], axis=1)
    order = np.lexsort((ids, -cos), axis=-1)[:, :m]
    return TopK(np.take_along_axis(ids, order, axis=1), np.take_along_axis(cos, order, axis=1))


def exact_cosines(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """float64 cosines of ``queries`` (n, d) with their candidates (n, m, d)."""
    n, m = candidates.shape[:2]
    flat = np.ascontiguousarray(candidates, dtype=np.float32).reshape(n * m, -1)
    rows = np.repeat(np.arange(n), m)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return row_dots(queries, rows, flat, np.arange(n * m)).reshape(n, m)


def row_dots(a: np.ndarray, rows: np.ndarray, b: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 dot products of ``a[rows[i]]`` with ``b[cols[i]]`` (float32 inputs).

    The one place cosines are computed exactly: every search path goes through it, so equal
    vectors give bit-equal cosines and ties break the same way everywhere.
    """
    out = np.empty(len(rows))
    left_all, right_all = torch.from_numpy(a), torch.from_numpy(b)
    for lo in range(0, len(rows), 65_536):
        hi = lo + 65_536
        left = left_all[torch.from_numpy(np.asarray(rows[lo:hi]))]
        right = right_all[torch.from_numpy(np.asarray(cols[lo:hi]))]
        out[lo:hi] = fixed_order_dots(left, right).numpy()
    return out


def fixed_order_dots(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Row-wise float64 dot products summed in one fixed pairwise order.

    A library reduction may split a row differently depending on how many rows there are
    (or on the device), changing the last bit; halving the padded row until one column is
    left adds the same numbers in the same order every time, on the CPU and on a GPU.
    """
    products = left.double() * right.double()
    width = 1 << max(0, (products.shape[1] - 1).bit_length())
    if width != products.shape[1]:
        products = torch.nn.functional.pad(products, (0, width - products.shape[1]))
    while width > 1:
        width //= 2
        products = products[:, :width] + products[:, width:]
    return products[:, 0]


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class BlockedKnn:
    """Exact top-``m`` of a fixed query set against base vectors streamed in chunks.

    ``add_chunk`` updates each query's forward list with the chunk and returns, for every
    row of the chunk, its own top-``m`` among the queries (the reverse direction), so one
    pass over the base serves both directions.
    """

    def __init__(
        self,
        query_ids: np.ndarray,
        query_vectors: np.ndarray,
        m: int,
        *,
        device: str | None = None,
        query_block: int = 4096,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.m = m
        self.device = pick_device(device)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        self.query_block = query_block
        # numpy's BLAS for float32 on the CPU; torch (and exact re-scoring next to the data)
        # for the GPU and for low-precision products
        on_gpu = self.device.type != "cpu" or dtype != torch.float32
        # float32 copies stay on the device for the exact re-scoring of the kept candidates
        self._q32 = torch.from_numpy(self.query_vectors).to(self.device) if on_gpu else None
        self._q = self._q32.to(self.dtype) if self._q32 is not None else None
        self.forward = TopK.empty(len(self.query_ids), m)
        # how far a low-precision cosine may stray from the float64 one
        self._slack = {torch.float32: 1e-5, torch.float16: 4e-3}.get(self.dtype, 2e-2)

    def add_chunk(
        self, base_ids: np.ndarray, base_vectors: np.ndarray, bars: np.ndarray | None = None
    ) -> TopK:
        """Fold a chunk of the base into the forward lists; return the chunk's reverse lists.

        ``bars`` (one per base row) skip reverse work for rows no query can enter: only
        entries within rounding error of a row's bar (its current k-th cosine, or -inf while
        its list is short) are re-scored; the other rows come back empty.
        """
        base_ids = np.asarray(base_ids, dtype=np.int64)
        base_vectors = np.ascontiguousarray(base_vectors, dtype=np.float32)
        n_base = len(base_ids)
        reverse = TopK.empty(n_base, self.m)
        if n_base == 0 or len(self.query_ids) == 0:
            return reverse
        on_cpu = self._q32 is None
        base32 = None if on_cpu else torch.from_numpy(base_vectors).to(self.device)
        base = None if base32 is None else base32.to(self.dtype)
        for start in range(0, len(self.query_ids), self.query_block):
            stop = min(start + self.query_block, len(self.query_ids))
            if on_cpu:  # topk runs on a view of numpy's result
                sims = torch.from_numpy(self.query_vectors[start:stop] @ base_vectors.T)
            else:
                sims = self._q[start:stop] @ base.T
            q_ids, q_vecs = self.query_ids[start:stop], self.query_vectors[start:stop]
            # forward: each query's best in this chunk, among entries that can still enter
            rows, cols = self._near_top(sims, self._forward_bar(start, stop))
            q32 = None if self._q32 is None else self._q32[start:stop]
            cos = self._exact(q_vecs, q32, rows, base_vectors, base32, cols)
            found = _reduce(rows, base_ids[cols], cos, stop - start, self.m)
            merged = merge_topk(self.forward.take(slice(start, stop)), found, self.m)
            self.forward.ids[start:stop] = merged.ids
            self.forward.cos[start:stop] = merged.cos
            # reverse: each base row's best among these queries; an entry matters only if it
            # beats both the row's bar and the m-th of what earlier query blocks gave it
            floor = reverse.cos[:, self.m - 1]
            if bars is not None:
                floor = np.maximum(floor, bars)
            rev = sims.T
            wanted = np.arange(n_base)
            if np.isfinite(floor).any():
                best = sims.max(dim=0).values.float().cpu().numpy()
                wanted = np.nonzero(best >= floor - self._slack)[0]
                if not len(wanted):
                    continue
                rev = rev[torch.from_numpy(wanted).to(rev.device)]
            rows, cols = self._near_top(rev, floor[wanted])
            rows = wanted[rows]
            cos = self._exact(base_vectors, base32, rows, q_vecs, q32, cols)
            found = _reduce(rows, q_ids[cols], cos, n_base, self.m)
            reverse = merge_topk(reverse, found, self.m)
        return reverse

    @staticmethod
    def _exact(
        a: np.ndarray,
        a_dev: torch.Tensor | None,
        rows: np.ndarray,
        b: np.ndarray,
        b_dev: torch.Tensor | None,
        cols: np.ndarray,
    ) -> np.ndarray:
        """float64 cosines of the kept (row, col) entries, on the GPU when the data is there."""
        if a_dev is None or b_dev is None:
            return row_dots(a, rows, b, cols)
        r = torch.from_numpy(rows).to(a_dev.device)
        c = torch.from_numpy(cols).to(b_dev.device)
        return fixed_order_dots(a_dev[r], b_dev[c]).cpu().numpy()

    def _forward_bar(self, start: int, stop: int) -> np.ndarray:
        """The m-th cosine of each query's running list (-inf while it is short)."""
        return self.forward.cos[start:stop, self.m - 1]

    def _near_top(
        self, sims: torch.Tensor, bars: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every entry within rounding error of its row's top ``m``.

        Taking all entries that might tie with the m-th best (rather than exactly m) keeps
        the selection exact under the (-cosine, id) order even with many identical vectors.
        The top ``m + 4`` usually settle it; rows where even those might tie are rescanned.
        """
        n_cols = sims.shape[1]
        m = min(self.m, n_cols)
        wide = min(m + 4, n_cols)
        slack = self._slack
        values, columns = sims.topk(wide, dim=1)
        bar = values[:, m - 1 : m] - slack
        if wide == n_cols:
            unsure = torch.zeros(len(values), dtype=torch.bool, device=values.device)
        else:
            unsure = values[:, -1] >= bar[:, 0]
        keep = (values >= bar) & ~unsure[:, None]
        if bars is not None:  # entries that cannot beat the row's running m-th best
            floor = torch.from_numpy(bars - slack).to(values.device, values.dtype)
            keep &= values >= floor[:, None]
            unsure &= values[:, 0] >= floor
        rows, picks = torch.nonzero(keep, as_tuple=True)
        cols = columns[rows, picks]
        if bool(unsure.any()):
            unsure_rows = torch.nonzero(unsure, as_tuple=True)[0]
            sub_rows, sub_cols = torch.nonzero(sims[unsure_rows] >= bar[unsure_rows], as_tuple=True)
            rows = torch.cat([rows, unsure_rows[sub_rows]])
            cols = torch.cat([cols, sub_cols])
        return rows.cpu().numpy(), cols.cpu().numpy()


def _reduce(rows: np.ndarray, ids: np.ndarray, cos: np.ndarray, n_rows: int, m: int) -> TopK:
    """Group (row, id, cos) entries by row and keep each row's best ``m`` by (-cos, id)."""
    out = TopK.empty(n_rows, m)
    if not len(rows):
        return out
    order = np.lexsort((ids, -cos, rows))
    rows, ids, cos = rows[order], ids[order], cos[order]
    first = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - first
    keep = rank < m
    out.ids[rows[keep], rank[keep]] = ids[keep]
    out.cos[rows[keep], rank[keep]] = cos[keep]
    return out
