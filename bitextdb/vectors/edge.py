"""Qdrant Edge: the Qdrant engine in-process, one persistent shard per language."""

from __future__ import annotations

import array
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from ..config import check_lang
from ..errors import ConfigError, ModelMismatchError, StoreUnavailableError
from ..lock import flock_within
from .base import Hit, as_ids, as_vectors, in_order, rescore_oversampling

_CONFIG_FILE = "edge_config.json"
#: the name of the store, which the SQL database it belongs to keeps too
STORE_ID_FILE = "store-id"


PLAIN_LIMIT = 5_000  # points searched outside the HNSW graph before it is extended
DAMAGE_SAMPLE = 256  # points of each shard `check` reads back (`check --deep`: every one)
DAMAGE_HINT = (
    "If its files were damaged, `bitextdb check` says so and `bitextdb check --repair` sets "
    "the shard aside and makes it again"
)
MIRROR_RETRIEVE = 1_024  # retrieves of at least this many ids read the mirror
WRITER_LOCK = ".writer.lock"  # held by a writer process while it has the shards


class ShardFailure(StoreUnavailableError):
    """A shard the binding failed to read; ``reason`` is what the binding said."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)  # (sent between processes with the message alone)
        self.reason = message if reason is None else reason


class EdgeIndex:
    """Shards live in ``root/<lang>/``; only one process may open them (the home lock)."""

    backend = "qdrant-edge"

    def __init__(
        self,
        root: Path,
        *,
        hnsw_m: int = 32,
        hnsw_ef_construct: int = 256,
        vector_dtype: str = "float32",
        quantization: str = "none",
    ) -> None:
        self.root = Path(root)
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self.vector_dtype = vector_dtype
        self.quantization = quantization
        self._shards: dict[str, qe.EdgeShard] = {}
        self._indexed_fields: set[tuple[str, str]] = set()
        self._logged: dict[str, bool] = {}  # language -> its shard keeps a write-ahead log
        self._dims: dict[str, int] = {}  # language -> its shard's width, once read
        self.is_writer = False  # set in the writer process, which holds the writer lock

    def options(self) -> dict[str, object]:
        """The keyword arguments that open this index again (in another process)."""
        return {
            "hnsw_m": self.hnsw_m,
            "hnsw_ef_construct": self.hnsw_ef_construct,
            "vector_dtype": self.vector_dtype,
            "quantization": self.quantization,
        }

    # -- shards ------------------------------------------------------------------------
    def _dir(self, lang: str) -> Path:
        return self.root / check_lang(lang)

    def _config(self, dim: int) -> qe.EdgeConfig:
        datatype = qe.VectorStorageDatatype.Float16 if self.vector_dtype == "float16" else None
        quantization = {
            "scalar": lambda: qe.ScalarQuantizationConfig(
                type=qe.ScalarType.Int8, quantile=0.99, always_ram=True
            ),
            "binary": lambda: qe.BinaryQuantizationConfig(always_ram=True),
        }.get(self.quantization, lambda: None)()
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(
                size=dim,
                distance=qe.Distance.Cosine,
                datatype=datatype,
                quantization_config=quantization,
                # with quantization only the compact copy needs RAM; the full vectors are
                # read from disk for rescoring
                on_disk=quantization is not None,
            ),
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m, ef_construct=self.hnsw_ef_construct, full_scan_threshold=10_000
            ),
            # Edge has no background optimizer: the graph is built when ``build_index`` calls
            # ``optimize``, which the miner does only above ``exact_limit``. Qdrant's default
            # threshold (about 10 MB of vectors) would silently skip smaller collections.
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            # no write-ahead log: every change is flushed before the call returns
            # (:meth:`_settle`), so what a caller was told is stored stays stored, and a
            # batch of points is stored in about 60 % of the time (benchmarks/storage.py).
            # Shards made before keep their log.
            wal_enabled=False,
        )

    def _shard(self, lang: str) -> qe.EdgeShard | None:
        shard = self._shards.get(lang)
        if shard is None and (self._dir(lang) / _CONFIG_FILE).is_file():
            try:
                self._wait_for_writer()
                shard = qe.EdgeShard.load(str(self._dir(lang)))
            except Exception as exc:  # the binding raises plain exceptions
                raise ShardFailure(
                    f"Cannot open the vector shard at {self._dir(lang)}: {exc}. {DAMAGE_HINT}",
                    f"it cannot be opened: {exc}",
                ) from exc
            self._shards[lang] = shard
        return shard

    def _wait_for_writer(self, seconds: float = 60.0) -> None:
        """Wait until no writer process (``edge_writer``) holds these shards.

        A writer whose ingesting process was killed finishes its batch and closes the
        shards before it exits; a process that opened them meanwhile would write beside it.
        """
        lock_path = self.root / WRITER_LOCK
        if self.is_writer or not lock_path.is_file():
            return
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            if not flock_within(fd, fcntl.LOCK_SH, seconds, poll=0.05):
                raise StoreUnavailableError(
                    f"A Qdrant Edge writer process still holds the shards in {self.root}."
                )
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _settle(self, lang: str, shard: qe.EdgeShard) -> None:
        """Make the changes so far durable: a flush, where the shard keeps no log."""
        if lang not in self._logged:
            try:
                data = self._stored_config(lang) or {}
                self._logged[lang] = data.get("wal_enabled", True) is not False
            except ConfigError:
                self._logged[lang] = False  # unknown: flushing is never wrong
        if not self._logged[lang]:
            shard.flush()

    def ensure(self, lang: str, dim: int) -> None:
        existing = self.dimension(lang)
        if existing is not None:
            if existing != dim:
                raise ModelMismatchError(
                    f"The {lang} vectors have dimension {existing}, not {dim}."
                )
            return
        path = self._dir(lang)
        if path.exists() and not (path / _CONFIG_FILE).is_file():
            shutil.rmtree(path)  # an interrupted create left an empty shell
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wait_for_writer()
        self._shards[lang] = qe.EdgeShard.create(str(path), self._config(dim))

    def _stored_config(self, lang: str) -> dict[str, Any] | None:
        """The shard's own ``edge_config.json`` (None: no shard yet)."""
        config_path = self._dir(lang) / _CONFIG_FILE
        if not config_path.is_file():
            return None
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Unreadable shard configuration {config_path}.") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"Unreadable shard configuration {config_path}.")
        return data

    def dimension(self, lang: str) -> int | None:
        """The width of ``lang``'s vectors; ``None`` while it has no shard. Read from the
        shard's configuration once (a shard's width never changes; every upsert asks)."""
        if lang in self._dims:
            return self._dims[lang]
        data = self._stored_config(lang)
        if data is None:
            return None
        try:
            dim = int(data["vectors"][""]["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"Unreadable shard configuration {self._dir(lang) / _CONFIG_FILE}."
            ) from exc
        self._dims[lang] = dim
        return dim

    def store_id(self) -> str | None:
        """The name this store was given when a database first used it (see
        :func:`bitextdb.api.open`), or None."""
        path = self.root / STORE_ID_FILE
        return path.read_text(encoding="utf-8").strip() or None if path.is_file() else None

    def name_store(self, store_id: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{STORE_ID_FILE}.tmp"
        tmp.write_text(store_id + "\n", encoding="utf-8")
        tmp.replace(self.root / STORE_ID_FILE)

    def languages(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / _CONFIG_FILE).is_file())

    def count(self, lang: str) -> int:
        shard = self._shard(lang)
        # without a filter the "approximate" count adds up the segments' live points, which
        # is the exact number (deletions and overwrites included); the exact count visits
        # every point (10 ms at 80,000, more than the search of translate)
        if shard is None:
            return 0
        with self._reading(lang):
            return int(shard.count(qe.CountRequest(exact=False)))

    def _require(self, lang: str) -> qe.EdgeShard:
        shard = self._shard(lang)
        if shard is None:
            raise StoreUnavailableError(f"There is no {lang} vector collection yet.")
        return shard

    # -- points ------------------------------------------------------------------------
    def upsert(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        shard = self._require(lang)
        ids = as_ids(ids)
        vectors = as_vectors(vectors)
        for start in range(0, len(ids), 1024):
            # the binding reads a vector as a sequence of floats: an array.array over the
            # row's bytes spares a list of Python floats (3.5-4.1x faster to build, exact;
            # benchmarks/storage.py)
            points = [
                qe.Point(int(i), array.array("f", v.tobytes()))  # type: ignore[arg-type]
                for i, v in zip(ids[start : start + 1024], vectors[start : start + 1024])
            ]
            with self._reading(lang):
                shard.update(qe.UpdateOperation.upsert_points(points))
        self._settle(lang, shard)
        self._mirror(lang).append(ids, vectors)

    def delete(self, lang: str, ids: np.ndarray) -> None:
        shard = self._shard(lang)
        if shard is not None and len(ids):
            with self._reading(lang):
                shard.update(qe.UpdateOperation.delete_points([int(i) for i in as_ids(ids)]))
            self._settle(lang, shard)
            self._mirror(lang).remove(as_ids(ids))

    def _mirror(self, lang: str) -> Mirror:
        dtype = np.float16 if self.vector_dtype == "float16" else np.float32
        return Mirror(self._dir(lang), dtype, self.dimension(lang) or 0)

    def retrieve(self, lang: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of ``ids`` (those that exist, in the order asked).

        Many at once (a mining group) are read from the flat mirror, as scans are: the
        binding hands vectors over as Python lists (65,536 of dimension 768 took 2.48 s that
        way against 0.28 s from the mirror, ``benchmarks/retrieve.py``). A few (a query)
        are asked of the shard.
        """
        shard = self._require(lang)
        wanted = as_ids(ids)
        if len(wanted) >= MIRROR_RETRIEVE:
            return self._retrieve_from_mirror(lang, shard, wanted)
        return self._retrieve_from_shard(lang, shard, wanted)

    def _retrieve_from_shard(
        self, lang: str, shard: qe.EdgeShard, wanted: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        found: dict[int, list[float]] = {}
        with self._reading(lang):
            for start in range(0, len(wanted), 4096):
                chunk = [int(i) for i in wanted[start : start + 4096]]
                for rec in shard.retrieve(chunk, with_payload=False, with_vector=True):
                    found[int(rec.id)] = rec.vector  # type: ignore[assignment]
        return in_order(wanted, found, lambda: self.dimension(lang))

    @contextlib.contextmanager
    def _reading(self, lang: str) -> Iterator[None]:
        """Turn a failure of the binding (a plain exception) into one sentence that names
        the shard and what to do; a damaged file (cut short, overwritten) fails so."""
        try:
            yield
        except Exception as exc:
            raise ShardFailure(
                f"The vector shard at {self._dir(lang)} failed: {exc}. {DAMAGE_HINT}", str(exc)
            ) from exc

    def damage(self, lang: str, sample: int | None = DAMAGE_SAMPLE) -> str | None:
        """Why ``lang``'s shard cannot be trusted, or None: it cannot be opened or read, or
        ``sample`` points (spread evenly; every point where None) of the copy written beside
        it (the mirror) are missing from it or read back otherwise. Reads only: the copy is
        not made again from the shard here, as a scan would."""
        if not (self._dir(lang) / _CONFIG_FILE).is_file():
            return None
        try:
            shard = self._require(lang)
            ids, vectors = self._mirror(lang).load()
            rows = np.arange(len(ids))
            if sample is not None and sample < len(ids):
                rows = np.unique(np.linspace(0, len(ids) - 1, max(sample, 1)).round())
                rows = rows.astype(np.int64)
            found, read = self._retrieve_from_shard(lang, shard, ids[rows])
            written = np.asarray(vectors[rows], dtype=np.float32)
        except Exception as exc:  # damaged files may fail any way: that is what is asked
            said = exc.reason if isinstance(exc, ShardFailure) else str(exc)
            return said.strip().splitlines()[0] if said.strip() else type(exc).__name__
        if len(found) < len(rows):
            return f"{len(rows) - len(found)} of {len(rows)} points read are not in the shard"
        tolerance = 1e-3 if self.vector_dtype == "float16" else 1e-6
        with np.errstate(all="ignore"):  # damaged bytes may read as NaN or infinity
            differ = int((~(np.abs(read - written) <= tolerance).all(axis=1)).sum())
        if differ:
            return (
                f"{differ} of {len(rows)} vectors read back from the shard differ from the "
                "copy written beside them"
            )
        return None

    def set_aside(self, lang: str, dim: int, wanted: np.ndarray) -> tuple[Path, int, int]:
        """Move ``lang``'s shard out of the store (to ``damaged-vectors/<lang>-<time>``
        beside it) and make it again with the vectors of ``wanted`` ids that the old shard
        holds whole (a unit vector: a damaged row is none), and those its copy (the mirror)
        holds whole where the shard does not. Returns where the old one went, how many
        vectors came back, and how many rows of the copy differed from the shard's."""
        tolerance = 1e-2 if self.vector_dtype == "float16" else 1e-4
        try:
            held = _unit_rows(*self._read_all(lang), wanted, tolerance)
        except Exception:  # unreadable: its copy alone
            held = _unit_rows(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), wanted, 1)
        shard = self._shards.pop(lang, None)
        if shard is not None:
            with contextlib.suppress(Exception):  # a damaged shard may fail to flush
                shard.close()
        aside = self.root.parent / "damaged-vectors" / f"{lang}-{time.strftime('%Y%m%dT%H%M%S')}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(2):  # twice in one second
            if not aside.exists():
                break
            aside = aside.with_name(f"{aside.name.split('.')[0]}.{n}")
        self._dir(lang).rename(aside)
        self._indexed_fields = {known for known in self._indexed_fields if known[0] != lang}
        self._dims.pop(lang, None)
        self.ensure(lang, dim)
        dtype = np.float16 if self.vector_dtype == "float16" else np.float32
        try:
            copy = _unit_rows(*Mirror(aside, dtype, dim).load(), wanted, tolerance)
        except (OSError, ValueError):
            copy = _unit_rows(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), wanted, 1)
        ids, vectors, doubted = _agreed(held, copy, tolerance)
        for start in range(0, len(ids), 65_536):
            self.upsert(lang, ids[start : start + 65_536], vectors[start : start + 65_536])
        return aside, len(ids), doubted

    def _read_all(self, lang: str) -> tuple[np.ndarray, np.ndarray]:
        """Every point the shard gives, read from the shard itself (not its copy)."""
        shard = self._require(lang)
        parts_ids, parts_vectors, offset = [], [], None
        while True:
            with self._reading(lang):
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=8192, with_payload=False, with_vector=True
                    )
                )
            if records:
                parts_ids.append(np.array([int(r.id) for r in records], dtype=np.int64))
                parts_vectors.append(np.array([r.vector for r in records], dtype=np.float32))
            if offset is None:
                break
        dim = self.dimension(lang) or 0
        if not parts_ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), np.float32)
        return np.concatenate(parts_ids), np.concatenate(parts_vectors)

    def _retrieve_from_mirror(
        self, lang: str, shard: qe.EdgeShard, wanted: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = self._current_mirror(lang, shard)
        if not len(ids):
            return np.zeros(0, dtype=np.int64), np.zeros((0, vectors.shape[1]), np.float32)
        order = np.argsort(ids)
        rows = order[np.minimum(np.searchsorted(ids, wanted, sorter=order), len(ids) - 1)]
        present = ids[rows] == wanted
        return wanted[present], np.asarray(vectors[rows[present]], dtype=np.float32)

    def scan(self, lang: str, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every point, read from the shard's flat mirror (rebuilt from the shard if stale).

        The Python binding hands vectors over as lists, which costs far more than the search
        itself; the mirror is an append-only copy of what was upserted, checked against the
        shard's point count on every scan, so a crash or a foreign write only costs a rebuild.
        """
        shard = self._shard(lang)
        if shard is None:
            return
        ids, vectors = self._current_mirror(lang, shard)
        for start in range(0, len(ids), batch_size):
            yield (
                ids[start : start + batch_size],
                np.asarray(vectors[start : start + batch_size], dtype=np.float32),
            )

    def _current_mirror(self, lang: str, shard: qe.EdgeShard) -> tuple[np.ndarray, np.ndarray]:
        """The mirror's ids and vectors, rebuilt from the shard if its count differs."""
        mirror = self._mirror(lang)
        ids, vectors = mirror.load()
        if len(ids) != self.count(lang):
            ids, vectors = self._rebuild_mirror(lang, shard, mirror)
        return ids, vectors

    def _rebuild_mirror(
        self, lang: str, shard: qe.EdgeShard, mirror: Mirror
    ) -> tuple[np.ndarray, np.ndarray]:
        mirror.replace(*self._read_all(lang))
        return mirror.load()

    def search(
        self,
        lang: str,
        queries: np.ndarray,
        limit: int,
        *,
        exact: bool,
        ef: int | None = None,
        score_threshold: float | None = None,
        band: tuple[str, int] | None = None,
        has_field: str | None = None,
        with_vectors: bool = True,
    ) -> list[list[Hit]]:
        shard = self._shard(lang)
        queries = as_vectors(queries)
        if shard is None or not len(queries):
            return [[] for _ in range(len(queries))]
        flt = None
        if band is not None:
            flt = qe.Filter(must=[qe.FieldCondition(key=band[0], match=qe.MatchValue(band[1]))])
        elif has_field is not None:
            flt = qe.Filter(must_not=[qe.IsEmptyCondition(has_field)])
        quantized = None
        if self.quantization != "none" and not exact:  # quantized candidates, exact rescoring
            quantized = qe.QuantizationSearchParams(
                rescore=True, oversampling=rescore_oversampling(limit, ef)
            )
        params = qe.SearchParams(hnsw_ef=ef, exact=exact, quantization=quantized)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), 256):
            requests = [
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(q.tolist()),
                    filter=flt,
                    score_threshold=score_threshold,
                    params=params,
                    with_vector=with_vectors,
                    with_payload=False,
                )
                for q in queries[start : start + 256]
            ]
            with self._reading(lang):
                batch = shard.query_batch(qe.QueryBatchRequest(requests))
                top = max((float(p.score) for scored in batch for p in scored[:1]), default=0.0)
                if not top <= 1.01:  # unit vectors give no such cosine (NaN included)
                    raise ValueError(f"it gave a cosine of {top:g}: its vectors are not whole")
            for scored in batch:
                results.append(
                    [
                        Hit(
                            int(p.id),
                            float(p.score),
                            np.asarray(p.vector, dtype=np.float32) if with_vectors else None,
                        )
                        for p in scored
                    ]
                )
        return results

    def set_band(self, lang: str, field: str, band: int, ids: np.ndarray) -> None:
        shard = self._require(lang)
        self._index_field(lang, field, shard)
        ids = as_ids(ids)
        for start in range(0, len(ids), 4096):
            chunk = [int(i) for i in ids[start : start + 4096]]
            with self._reading(lang):
                shard.update(qe.UpdateOperation.set_payload(chunk, {field: int(band)}))
        self._settle(lang, shard)

    def bands(self, lang: str, field: str) -> set[int]:
        shard = self._shard(lang)
        if shard is None:
            return set()
        self._index_field(lang, field, shard)  # a facet needs it (no band written yet)
        # N_BANDS values at most: the limit only has to be above that
        facets = shard.facet(qe.FacetRequest(field, limit=1000, exact=True))
        return {int(hit.value) for hit in facets.hits}

    def _index_field(self, lang: str, field: str, shard: qe.EdgeShard) -> None:
        """Give the integer payload ``field`` its index (kept in the shard; asked once a
        process)."""
        if (lang, field) not in self._indexed_fields:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer))
            self._indexed_fields.add((lang, field))

    def build_index(self, lang: str) -> None:
        """Build the HNSW graph, or extend it once enough points wait outside it.

        Points not yet in the graph sit in a plain segment that every search scans exactly;
        a few thousand of them cost little to scan, while indexing a few hundred points at
        every mine took a large share of a small HNSW addition's time.
        """
        shard = self._shard(lang)
        if shard is None:
            return
        info = shard.info()
        waiting = info.points_count - info.indexed_vectors_count
        if waiting and (info.indexed_vectors_count == 0 or waiting >= PLAIN_LIMIT):
            shard.optimize()
            self._settle(lang, shard)

    def indexed_count(self, lang: str) -> int:
        shard = self._shard(lang)
        return 0 if shard is None else int(shard.info().indexed_vectors_count)

    def flush(self) -> None:
        for shard in self._shards.values():
            shard.flush()

    def close(self) -> None:
        for shard in self._shards.values():
            try:
                shard.flush()
            finally:
                shard.close()
        self._shards.clear()


def _unit_rows(
    ids: np.ndarray, vectors: np.ndarray, wanted: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``wanted`` ids that are unit vectors, sorted by id (read as float32)."""
    keep = np.flatnonzero(np.isin(ids, wanted))
    rows = np.asarray(vectors[keep], dtype=np.float32)
    with np.errstate(all="ignore"):  # damaged bytes may read as NaN or infinity
        unit = np.abs(np.linalg.norm(rows, axis=1) - 1) <= tolerance
    ids, rows = ids[keep][unit], rows[unit]
    order = np.argsort(ids, kind="stable")
    return ids[order], rows[order]


def _agreed(
    held: tuple[np.ndarray, np.ndarray], copy: tuple[np.ndarray, np.ndarray], tolerance: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """The rows of two sorted readings, the shard's (``held``) and its copy's: the shard's
    where it has a row (it is what was stored; the copy only mirrors it), the copy's where
    the shard lost it; and how many rows the copy has otherwise than the shard."""
    (a_ids, a_rows), (b_ids, b_rows) = held, copy
    _, in_a, in_b = np.intersect1d(a_ids, b_ids, assume_unique=True, return_indices=True)
    differ = int((~(np.abs(a_rows[in_a] - b_rows[in_b]) <= tolerance).all(axis=1)).sum())
    only_b = np.setdiff1d(np.arange(len(b_ids)), in_b)
    ids = np.concatenate([a_ids, b_ids[only_b]])
    rows = np.concatenate([a_rows, b_rows[only_b]])
    return ids, rows, differ


class Mirror:
    """An append-only flat copy of a shard's points: ``mirror.ids`` and ``mirror.vec``.

    Rows are (id, vector) in upsert order; a re-upserted id appears again and its last row
    wins. A torn append (a crash between the two files) is cut back to the rows both hold.
    """

    def __init__(self, folder: Path, dtype: type[np.floating], dim: int) -> None:
        self.ids_path = folder / "mirror.ids"
        self.vec_path = folder / "mirror.vec"
        self.dtype = np.dtype(dtype)
        self.dim = dim

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        self._cut_to_whole_rows()
        with open(self.vec_path, "ab") as vec, open(self.ids_path, "ab") as idf:
            vec.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
            idf.write(np.ascontiguousarray(ids, dtype=np.int64).tobytes())

    def _rows(self) -> int:
        """Rows both files hold whole."""
        if self.dim <= 0 or not self.ids_path.is_file() or not self.vec_path.is_file():
            return 0
        return min(
            self.ids_path.stat().st_size // 8,
            self.vec_path.stat().st_size // (self.dtype.itemsize * self.dim),
        )

    def _cut_to_whole_rows(self) -> None:
        """Drop what a torn append left, so the next rows line up in both files."""
        rows = self._rows()
        for path, width in ((self.ids_path, 8), (self.vec_path, self.dtype.itemsize * self.dim)):
            if path.is_file() and path.stat().st_size != rows * width:
                os.truncate(path, rows * width)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids (unique, last row wins) and their vectors, memory-mapped where possible."""
        rows = self._rows()
        if rows == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=self.dtype)
        ids = np.fromfile(self.ids_path, dtype=np.int64, count=rows)
        vectors = np.memmap(self.vec_path, dtype=self.dtype, mode="r", shape=(rows, self.dim))
        # the last row of each id wins
        _, last_from_end = np.unique(ids[::-1], return_index=True)
        keep = np.sort(rows - 1 - last_from_end)
        if len(keep) == rows:
            return ids, vectors
        # rewritten once without the older rows, so later loads map the file again instead
        # of copying every vector (a scan, and each mining group's retrieve, would)
        self.replace(ids[keep], np.asarray(vectors[keep]))
        return self.load()

    def replace(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for path in (self.ids_path, self.vec_path):
            path.unlink(missing_ok=True)
        self.append(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        current, vectors = self.load()
        keep = ~np.isin(current, ids)
        self.replace(current[keep], np.asarray(vectors)[keep])
