"""Exact k-nearest-neighbour search by blocked matrix products (torch; GPU when present).

Candidates are chosen in the fast dtype (float32 on CPU, float16/bfloat16 on GPU) with some
slack, then re-scored in float64 so the result is the exact (-cosine, id) order that
``margin`` defines, whatever the block sizes or device.

The search itself works on torch tensors on the engine's device from start to end: candidate
selection, re-scoring, grouping by row and merging into the running lists. numpy appears only
at the edges (the vectors handed in, ``BlockedKnn.forward`` and the lists ``add_chunk``
returns), and the numpy helpers below (``merge_topk``, ``row_dots``) run the same torch code on
the CPU, so there is one implementation of the order.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import device_list, require_devices
from .topk import PAD_ID, TopK

_DOT_ROWS = 65_536  # rows re-scored at once (bounds the float64 temporaries)
_COUNT_WIDTH = 32  # lists up to this long are ranked by counting, longer ones by sorting


def merge_topk(a: TopK, b: TopK, m: int) -> TopK:
    """Row-wise union of two best-first lists, keeping the best ``m`` by (-cos, id). An id
    already in ``a``'s row is not taken twice (a sentence re-mined by ``check --repair``
    after its own list was lost is still in the lists of others)."""
    b = _without_ids_of(b, a)
    ids, cos = _merge(
        (_tensor(a.ids, np.int64), _tensor(a.cos, np.float64)),
        (_tensor(b.ids, np.int64), _tensor(b.cos, np.float64)),
        min(m, a.ids.shape[1] + b.ids.shape[1]),
    )
    return TopK(ids.numpy(), cos.numpy())


def _without_ids_of(b: TopK, a: TopK) -> TopK:
    """``b`` without the ids its row shares with ``a``'s, still best-first."""
    shared = (b.ids[:, :, None] == a.ids[:, None, :]).any(axis=2) & (b.ids != PAD_ID)
    if not shared.any():
        return b
    ids = np.where(shared, PAD_ID, b.ids)
    cos = np.where(shared, -np.inf, b.cos)
    order = np.lexsort((ids, -cos), axis=-1)  # padding (-inf) sorts last
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

    The one place cosines are computed exactly: every search path goes through it (the
    blocked search through ``_gathered_dots`` on its device), so equal vectors give bit-equal
    cosines and ties break the same way everywhere.
    """
    return _gathered_dots(
        _tensor(a, np.float32),
        _tensor(rows, np.int64),
        _tensor(b, np.float32),
        _tensor(cols, np.int64),
    ).numpy()


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
    """The device the search runs on: the first of a ``--device`` list (several GPUs share
    the encoding; the kNN runs on one), else CUDA where there is one."""
    names = [name for name in device_list(device) if name != "auto"]
    if names:
        require_devices(names[:1])
        return torch.device(names[0])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class BlockedKnn:
    """Exact top-``m`` of a fixed query set against base vectors streamed in chunks.

    ``add_chunk`` updates each query's forward list with the chunk and returns, for every
    row of the chunk, its own top-``m`` among the queries (the reverse direction), so one
    pass over the base serves both directions.

    The forward lists live on the engine's device for its whole life; ``forward`` copies
    them to the host when read (once per chunk at most). Query ids, and base ids across all
    chunks, must be unique: lists are merged on that assumption.
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
        # numpy's BLAS for float32 products on the CPU (faster than torch's there); torch for
        # the GPU and for low-precision products
        self._numpy_products = self.device.type == "cpu" and dtype == torch.float32
        # float32 copies (views on the CPU) for the exact re-scoring of the kept candidates
        self._q32 = _tensor(self.query_vectors, np.float32).to(self.device)
        self._q = None if self._numpy_products else self._q32.to(self.dtype)
        self._qids = _tensor(self.query_ids, np.int64).to(self.device)
        n = len(self.query_ids)
        self._fwd_ids = torch.full((n, m), PAD_ID, dtype=torch.int64, device=self.device)
        self._fwd_cos = torch.full((n, m), -np.inf, dtype=torch.float64, device=self.device)
        self._forward: TopK | None = None
        # how far a low-precision cosine may stray from the float64 one
        self._slack = {torch.float32: 1e-5, torch.float16: 4e-3}.get(self.dtype, 2e-2)

    @property
    def forward(self) -> TopK:
        """The queries' lists so far (a host copy, refreshed after each ``add_chunk``)."""
        if self._forward is None:
            self._forward = TopK(_host(self._fwd_ids), _host(self._fwd_cos))
        return self._forward

    def add_chunk(
        self, base_ids: np.ndarray, base_vectors: np.ndarray, bars: np.ndarray | None = None
    ) -> TopK:
        """Fold a chunk of the base into the forward lists; return the chunk's reverse lists.

        ``bars`` (one per base row) skip reverse work for rows no query can enter: only
        entries within rounding error of a row's bar (its current k-th cosine, or -inf while
        its list is short) are re-scored; the other rows come back empty.

        Per query block, the only host syncs are the sizes of data-dependent selections
        (``torch.nonzero``: the reverse rows worth a look here, the kept entries in
        ``_near_top``), which the next kernels need to allocate; nothing else leaves the
        device until the reverse lists are returned.
        """
        base_ids = np.asarray(base_ids, dtype=np.int64)
        base_vectors = np.ascontiguousarray(base_vectors, dtype=np.float32)
        n_base, m, dev = len(base_ids), self.m, self.device
        rev_ids = torch.full((n_base, m), PAD_ID, dtype=torch.int64, device=dev)
        rev_cos = torch.full((n_base, m), -np.inf, dtype=torch.float64, device=dev)
        if n_base == 0 or len(self.query_ids) == 0:
            return TopK(_host(rev_ids), _host(rev_cos))
        self._forward = None
        bids = _tensor(base_ids, np.int64).to(dev)
        base32 = _tensor(base_vectors, np.float32).to(dev)
        base = None if self._numpy_products else base32.to(self.dtype)
        # a row's reverse floor is the higher of its bar and the m-th of what earlier query
        # blocks gave it: all -inf in the first block unless a bar is finite (known here)
        open_floors = bars is None or not np.isfinite(bars).any()
        bars_dev = None if bars is None else _tensor(bars, np.float64).to(dev)
        for start in range(0, len(self.query_ids), self.query_block):
            stop = min(start + self.query_block, len(self.query_ids))
            if self._numpy_products:  # topk runs on a view of numpy's result
                sims = torch.from_numpy(self.query_vectors[start:stop] @ base_vectors.T)
            else:
                sims = self._q[start:stop] @ base.T
            q32, qids = self._q32[start:stop], self._qids[start:stop]
            # forward: each query's best in this chunk, among entries that can still enter
            ids, cos = self._fwd_ids[start:stop], self._fwd_cos[start:stop]
            self._fold(sims, ids, cos, cos[:, m - 1], q32, base32, bids)
            # reverse: each base row's best among these queries; an entry matters only if it
            # beats both the row's bar and the m-th of what earlier query blocks gave it
            floor = rev_cos[:, m - 1]
            if bars_dev is not None:
                floor = torch.maximum(floor, bars_dev)
            wanted = None
            if not (open_floors and start == 0):
                best = sims.amax(dim=0).double()
                wanted = torch.nonzero(best >= floor - self._slack).squeeze(1)  # sync: its size
                if not len(wanted):
                    continue
                if len(wanted) == n_base:
                    wanted = None
            self._fold(sims.T, rev_ids, rev_cos, floor, base32, q32, qids, wanted)
        return TopK(_host(rev_ids), _host(rev_cos))

    def _fold(
        self,
        sims: torch.Tensor,
        ids: torch.Tensor,
        cos: torch.Tensor,
        floor: torch.Tensor,
        a32: torch.Tensor,
        b32: torch.Tensor,
        b_ids: torch.Tensor,
        only: torch.Tensor | None = None,
    ) -> None:
        """Merge into the lists ``ids``, ``cos`` (in place) each row's best entries of ``sims``.

        Row ``r`` of ``sims`` is vector ``a32[r]``, with list ``r`` and ``floor[r]`` (the
        cosine an entry must beat, -inf for none); column ``c`` is ``b32[c]``, with id
        ``b_ids[c]``. ``only`` limits the work to those rows.
        """
        m = self.m
        lists = (ids, cos)
        if only is not None:
            sims, floor, lists = sims[only], floor[only], (ids[only], cos[only])
        rows, picks, columns, extra_rows, extra_cols = self._near_top(sims, floor)
        cols = torch.cat([columns[rows, picks], extra_cols])
        dot_rows = torch.cat([rows, extra_rows])
        if only is not None:
            dot_rows = only[dot_rows]
        found_cos = _gathered_dots(a32, dot_rows, b32, cols)
        found_ids = b_ids[cols]
        # the kept entries stay in their top-k slots: one short list per row, no grouping
        n_keep = len(rows)
        keep_ids = torch.full(columns.shape, PAD_ID, dtype=torch.int64, device=ids.device)
        keep_cos = torch.full(columns.shape, -np.inf, dtype=torch.float64, device=ids.device)
        keep_ids[rows, picks] = found_ids[:n_keep]
        keep_cos[rows, picks] = found_cos[:n_keep]
        merged = _merge(lists, _best(keep_ids, keep_cos, m), m)
        if len(extra_rows):  # rescanned rows: any number of entries each
            extra = (found_ids[n_keep:], found_cos[n_keep:])
            merged = _merge(merged, _group(extra_rows, *extra, len(sims), m), m)
        if only is None:
            ids.copy_(merged[0])
            cos.copy_(merged[1])
        else:
            ids[only], cos[only] = merged

    def _near_top(
        self, sims: torch.Tensor, floor: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every entry within rounding error of its row's top ``m``, in two parts.

        Returns ``rows, picks, columns``: entry ``(rows[i], columns[rows[i], picks[i]])``, from
        the row's top ``m + 4`` (``columns``), which usually settle it; and ``extra_rows,
        extra_cols``: all the entries of the rows where even those might tie, rescanned.
        Taking all entries that might tie with the m-th best (rather than exactly m) keeps
        the selection exact under the (-cosine, id) order even with many identical vectors.
        ``floor`` (float64, one per row, -inf for none) drops entries that cannot beat the
        row's running m-th best.

        Host syncs: ``torch.nonzero`` for the kept entries, for the rows to rescan (none when
        the top ``m + 4`` is the whole row) and, when there are some, for their entries.
        """
        n_cols = sims.shape[1]
        m = min(self.m, n_cols)
        wide = min(m + 4, n_cols)
        slack = self._slack
        values, columns = sims.topk(wide, dim=1)
        values = values.double()
        bar = values[:, m - 1] - slack
        lower = torch.maximum(bar, floor - slack)
        keep = values >= lower[:, None]
        extra_rows = extra_cols = columns.new_zeros(0)
        if wide < n_cols:
            # the (m+4)-th might tie with the m-th, and the row can still take entries
            unsure = (values[:, -1] >= bar) & (values[:, 0] >= lower)
            keep &= ~unsure[:, None]
            unsure_rows = torch.nonzero(unsure).squeeze(1)  # sync: its size
            if len(unsure_rows):
                # in the products' dtype: rounding is monotone, so no entry >= lower is lost
                rescan = sims[unsure_rows] >= lower[unsure_rows, None].to(sims.dtype)
                sub_rows, extra_cols = torch.nonzero(rescan, as_tuple=True)  # sync: its size
                extra_rows = unsure_rows[sub_rows]
        rows, picks = torch.nonzero(keep, as_tuple=True)  # sync: its size
        return rows, picks, columns, extra_rows, extra_cols


def _tensor(x: np.ndarray, dtype: type[np.generic]) -> torch.Tensor:
    """A CPU tensor sharing ``x``'s memory where it can (C-ordered, writable, of ``dtype``)."""
    return torch.from_numpy(np.require(x, dtype=dtype, requirements=["C", "W"]))


def _host(x: torch.Tensor) -> np.ndarray:
    """A numpy copy of ``x`` (never a view of a tensor the engine may still change)."""
    return x.to("cpu", copy=True).numpy()


def _gathered_dots(
    a: torch.Tensor, rows: torch.Tensor, b: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """float64 ``fixed_order_dots`` of ``a[rows[i]]`` with ``b[cols[i]]``, on their device."""
    out = torch.empty(len(rows), dtype=torch.float64, device=a.device)
    for lo in range(0, len(rows), _DOT_ROWS):
        hi = lo + _DOT_ROWS
        out[lo:hi] = fixed_order_dots(a[rows[lo:hi]], b[cols[lo:hi]])
    return out


def _lexsort(keys: list[torch.Tensor], dim: int = -1) -> torch.Tensor:
    """Indices that sort along ``dim`` by the last key, then the one before, ... (np.lexsort).

    One stable sort per key, least significant first: torch has no lexsort, but stable sorts
    compose into one (on CUDA too). Callers negate cosines as ``0.0 - cos``, which has no
    -0.0 for a radix sort to put before +0.0.
    """
    order = torch.argsort(keys[0], dim=dim, stable=True)
    for key in keys[1:]:
        order = order.gather(dim, torch.argsort(key.gather(dim, order), dim=dim, stable=True))
    return order


def _before(
    x_ids: torch.Tensor, x_cos: torch.Tensor, y_ids: torch.Tensor, y_cos: torch.Tensor
) -> torch.Tensor:
    """Whether entry x comes before entry y in the (-cos, id) order (elementwise, broadcast)."""
    return (x_cos > y_cos) | ((x_cos == y_cos) & (x_ids < y_ids))


def _place(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], n: int, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (n, m) lists from (ids, cos, rank) parts: each entry goes to column ``rank``.

    Ranks of real entries are distinct; padding may share a rank but writes the same values,
    and ranks past ``m`` land in a spare column that is dropped.
    """
    device = parts[0][0].device
    out_ids = torch.full((n, m + 1), PAD_ID, dtype=torch.int64, device=device)
    out_cos = torch.full((n, m + 1), -np.inf, dtype=torch.float64, device=device)
    for ids, cos, rank in parts:
        column = rank.clamp(max=m).long()
        out_ids.scatter_(1, column, ids)
        out_cos.scatter_(1, column, cos)
    return out_ids[:, :m], out_cos[:, :m]


def _best(ids: torch.Tensor, cos: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's best ``m`` by (-cos, id) of short unsorted rows (ids distinct but padding).

    A row's entries are ranked by counting the entries of the row that come before each: a
    few elementwise ops, no sort (torch's sorts are slow on the CPU and these rows are short);
    rows longer than ``_COUNT_WIDTH`` are sorted instead (two stable sorts).
    """
    n, width = ids.shape
    if width > _COUNT_WIDTH:
        order = _lexsort([ids, 0.0 - cos], dim=1)[:, :m]
        rank = torch.arange(order.shape[1], device=ids.device).expand(n, -1)
        return _place([(ids.gather(1, order), cos.gather(1, order), rank)], n, m)
    # [r, j, k]: entry k of row r comes before its entry j
    before = _before(ids[:, None, :], cos[:, None, :], ids[:, :, None], cos[:, :, None])
    return _place([(ids, cos, before.sum(dim=2, dtype=torch.int32))], n, m)


def _merge(
    a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise union of two disjoint best-first padded lists (ids, cos): the best ``m``.

    Merged by rank, without sorting: entry ``j`` of ``a`` has ``j`` entries of ``a`` before it
    plus those of ``b`` that come before it; an entry of ``b`` likewise (and, the lists being
    disjoint, the entries of ``a`` not after it are before it). Padding ranks past every real
    entry.
    """
    (a_ids, a_cos), (b_ids, b_cos) = a, b
    n, width_a = a_ids.shape
    if width_a * b_ids.shape[1] > _COUNT_WIDTH**2:  # long lists: sort them together
        return _best(torch.cat([a_ids, b_ids], dim=1), torch.cat([a_cos, b_cos], dim=1), m)
    # [r, j, k]: entry k of b comes before entry j of a
    b_first = _before(b_ids[:, None, :], b_cos[:, None, :], a_ids[:, :, None], a_cos[:, :, None])
    rank_a = torch.arange(width_a, device=a_ids.device) + b_first.sum(dim=2, dtype=torch.int32)
    rank_b = torch.arange(b_ids.shape[1], device=a_ids.device) + (
        width_a - b_first.sum(dim=1, dtype=torch.int32)
    )
    return _place([(a_ids, a_cos, rank_a), (b_ids, b_cos, rank_b)], n, m)


def _group(
    rows: torch.Tensor, ids: torch.Tensor, cos: torch.Tensor, n_rows: int, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group (row, id, cos) entries by row and keep each row's best ``m`` by (-cos, id).

    Padded (n_rows, m) lists, built without leaving the device: after sorting by (row, -cos,
    id), an entry's rank in its row is its position minus where its row starts.
    """
    out_ids = torch.full((n_rows, m + 1), PAD_ID, dtype=torch.int64, device=ids.device)
    out_cos = torch.full((n_rows, m + 1), -np.inf, dtype=torch.float64, device=ids.device)
    if len(rows):
        order = _lexsort([ids, 0.0 - cos, rows])
        rows, ids, cos = rows[order], ids[order], cos[order]
        rank = torch.arange(len(rows), device=rows.device) - torch.searchsorted(rows, rows)
        column = rank.clamp(max=m)
        out_ids[rows, column] = ids
        out_cos[rows, column] = cos
    return out_ids[:, :m], out_cos[:, :m]
