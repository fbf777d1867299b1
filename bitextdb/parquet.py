"""Apache Parquet output for ``export --format parquet`` (pyarrow, the ``parquet`` extra).

A column a field of the jsonl records, typed (texts and languages as strings, margin and
cosine as float64, ids as int64, sources and external ids as lists of strings, a
withdrawal's moment as a UTC timestamp), zstd-compressed, in row groups of
:data:`ROW_GROUP` pairs: what ``datasets.load_dataset("parquet", ...)``, pandas and
DuckDB read as they are. Written as the text formats are (:mod:`bitextdb.outputs`): a
regular file under a temporary name renamed when complete, a pipe or device straight.
"""

from __future__ import annotations

import contextlib
from typing import IO, Any

from .errors import InputError
from .outputs import OutputFile

#: pairs a row group holds (the export hands over 1,000 at a time)
ROW_GROUP = 65_536


def _types() -> dict[str, Any]:
    import pyarrow as pa

    strings = pa.list_(pa.string())
    return {
        "src": pa.string(),
        "tgt": pa.string(),
        "src_lang": pa.string(),
        "tgt_lang": pa.string(),
        "margin": pa.float64(),
        "cosine": pa.float64(),
        "src_id": pa.int64(),
        "tgt_id": pa.int64(),
        "src_sources": strings,
        "tgt_sources": strings,
        "src_ext_ids": strings,
        "tgt_ext_ids": strings,
        "reason": pa.string(),
        "withdrawn_at": pa.timestamp("us", tz="UTC"),
    }


def require_pyarrow() -> None:
    """Raise one sentence saying what to install when pyarrow is missing."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise InputError("Parquet export needs pyarrow: pip install 'bitextdb[parquet]'.") from exc


class ParquetSink:
    """Records into one Parquet file with the columns ``fields``, renamed into place by
    :meth:`commit`; the same calls as the text formats' sink."""

    def __init__(self, file: OutputFile, fields: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = _types()
        self._schema = pa.schema([(name, types[name]) for name in fields])
        self._file: OutputFile | None = file
        self._path = file.path
        # batches already columnar (compact), written together as one row group
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._stream: IO[bytes] | None = None
        self._finished = False
        try:
            # what is not a regular file (a pipe) cannot seek: pyarrow then writes to a
            # Python stream, which it does not ask to
            self._stream = file.open_binary() if file.direct else None
            where = self._stream or str(file.temporary())
            self._writer = pq.ParquetWriter(where, self._schema, compression="zstd")
        except OSError as exc:
            raise InputError(f"Cannot write {file.path}: {exc}.") from exc

    def write(self, parts: list[list[dict[str, Any]]]) -> None:
        """Records (``parts[0]``), written a row group at a time."""
        import pyarrow as pa

        if parts[0]:
            self._pending.append(pa.RecordBatch.from_pylist(parts[0], schema=self._schema))
            self._pending_rows += len(parts[0])
        if self._pending_rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self._schema))
            self._pending, self._pending_rows = [], 0

    def finish(self) -> None:
        """Write what is left and close the file (raising if it cannot be written whole)."""
        if self._finished:
            return
        self._flush()
        self._writer.close()
        if self._stream is not None:
            self._stream.close()
        self._finished = True

    def commit(self) -> list[str]:
        """Write what is left, close the file and move it into place."""
        self.finish()
        assert self._file is not None
        self._file.install()
        self._file = None
        return [str(self._path)]

    def abort(self) -> None:
        """Drop the temporary file; nothing is left behind."""
        with contextlib.suppress(Exception):
            self._writer.close()
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
        if self._file is not None:
            self._file.discard()
            self._file = None
