"""Read corpus files (plain text, TSV, JSON Lines; optionally gzip/bzip2/xz) into sentences.

Everything here streams: memory stays bounded whatever the size of the file, and a single
record longer than :data:`MAX_RECORD_BYTES` is skipped (counted as too long) without being
held in memory.  Bad input never escapes as a traceback: problems with the file as a whole
raise :class:`~bitextdb.errors.InputError`; problems with single records are skipped and
counted in a :class:`ReadStats`.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import re
import sys
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from bitextdb.errors import InputError
from bitextdb.language_id import LanguageCheck, ParallelCheck
from bitextdb.segment import Splitter

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MIN_CHARS",
    "FORMATS",
    "MAX_RECORD_BYTES",
    "Line",
    "ReadStats",
    "detect_format",
    "normalize",
    "open_binary",
    "read_lines",
    "read_texts",
    "text_hash",
    "uncompressed_suffix",
]

DEFAULT_MIN_CHARS = 2
#: the JSON Lines field read when none is named
DEFAULT_FIELD = "text"
DEFAULT_MAX_CHARS = 1000
MAX_ID_CHARS = 256  # external ids (TSV id column, JSONL id field)
FORMATS = ("auto", "txt", "tsv", "jsonl")

#: A record (line) with more bytes than this, not counting its line break, is counted as
#: too long and skipped without being read into memory. It leaves room for the longest
#: sentence a database may keep (1,000,000 characters) in any script: UTF-8 takes up to
#: four bytes a character.
MAX_RECORD_BYTES = 4 << 20

#: How much of the (decompressed) start of a file is inspected to tell text from binary.
SNIFF_BYTES = 8192

_STDIN = "-"
_STDIN_NAME = "<stdin>"
_BUFFER_SIZE = 1 << 16
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)
_SURROGATE = re.compile("[\ud800-\udfff]")
_MISSING = object()

# C0 controls (tab, CR and LF included), DEL and C1 controls become spaces; the zero-width
# space, the word joiner and the byte-order mark disappear. The zero-width non-joiner and
# joiner (U+200C, U+200D) stay: they are spelling in Persian and the Indic scripts (می‌خواهم)
# and join emoji sequences.
_TRANSLATION: dict[int, str | None] = {cp: " " for cp in range(0x20)}
_TRANSLATION.update({cp: " " for cp in range(0x7F, 0xA0)})
_TRANSLATION.update({cp: None for cp in (0x200B, 0x2060, 0xFEFF)})
_JOINERS = "\u200c\u200d"
_JOINER = re.compile(f"[{_JOINERS}]")
# ``str.translate`` looks every character up in the table; most lines hold none of them,
# and a regular expression finds that out several times faster
_TRANSLATED = re.compile("[" + "".join(re.escape(chr(cp)) for cp in _TRANSLATION) + "]")


@dataclass
class ReadStats:
    """Counts of records seen and skipped by :func:`read_lines` (updated in place)."""

    lines: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    invalid_utf8: int = 0
    malformed: int = 0
    #: sentences put in another language by language identification
    wrong_language: int = 0
    #: sentences the records were split into (0 unless splitting)
    sentences: int = 0
    #: the positions of the records skipped as not valid UTF-8 (the first million): a
    #: file read again must not lose a line it held because its encoding changed
    unreadable: set[int] = dataclasses.field(default_factory=set, repr=False)

    def skipped(self) -> dict[str, int]:
        """Return ``{reason: count}`` for every skip reason with a non-zero count."""
        counts = self.as_dict()
        return {key: value for key, value in counts.items() if key not in _NOT_SKIPS and value}

    def as_dict(self) -> dict[str, int]:
        """Return all counters as a plain dict."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "unreadable"
        }

    def not_utf8(self, position: int) -> None:
        """Count a record skipped as not valid UTF-8, at ``position``."""
        self.invalid_utf8 += 1
        if len(self.unreadable) < 1_000_000:
            self.unreadable.add(position)


_NOT_SKIPS = ("lines", "sentences")

#: a record, or a sentence of one: (position, raw text, external id, part)
_Row = tuple[int, str, str | None, int]


@dataclass(frozen=True)
class Line:
    """One normalised sentence and where it came from.

    ``position`` is the 0-based index of the record in the source, counting skipped and
    empty records too (a TSV header row is not counted), so it stays aligned with a
    line-aligned side file such as precomputed embeddings.  ``part`` is the 0-based index
    of the sentence among those its record was split into (0 when records are not split).
    """

    position: int
    text: str
    ext_id: str | None = None
    part: int = 0


@dataclass(frozen=True)
class _Limits:
    min_chars: int
    max_chars: int
    split: Splitter | None
    language: LanguageCheck | None = None


def _bad_id(ext_id: str) -> bool:
    """An external id no database column should have to hold."""
    return len(ext_id) > MAX_ID_CHARS or "\x00" in ext_id


def _sentences(rows: Iterable[_Row], limits: _Limits, stats: ReadStats) -> Iterator[Line]:
    """The normalised sentences of ``(position, raw text, external id, part)`` rows, split
    first when asked; the ones skipped are counted."""
    check = limits.language
    if isinstance(check, ParallelCheck) and check.workers > 0:  # judged by other processes
        lines = _checked_sentences(rows, dataclasses.replace(limits, language=None), stats)
        return _in_language(lines, check, stats)
    return _checked_sentences(rows, limits, stats)


def _in_language(lines: Iterator[Line], check: ParallelCheck, stats: ReadStats) -> Iterator[Line]:
    for line, keep in check.verdicts(lines, _text_of):
        if keep:
            yield line
        else:
            stats.wrong_language += 1


def _text_of(line: Line) -> str:
    return line.text


def _checked_sentences(rows: Iterable[_Row], limits: _Limits, stats: ReadStats) -> Iterator[Line]:
    if limits.split is not None:
        rows = _split(rows, limits.split, stats)
    min_chars, max_chars, language = limits.min_chars, limits.max_chars, limits.language
    for position, raw, ext_id, part in rows:  # kept inline: the reading thread's loop
        text = normalize(raw)
        if ext_id is not None and _bad_id(ext_id):  # no call for the usual None
            stats.malformed += 1
        elif not text:
            stats.empty += 1
        elif len(text) < min_chars:
            stats.too_short += 1
        elif len(text) > max_chars:
            stats.too_long += 1
        elif language is not None and not language(text):
            stats.wrong_language += 1
        else:
            yield Line(position, text, ext_id, part)


def _split(rows: Iterable[_Row], split: Splitter, stats: ReadStats) -> Iterator[_Row]:
    """Each row's sentences as rows of their own, numbered by ``part``; the external id of
    part N becomes ``ID#N`` (1-based)."""
    for position, raw, ext_id, _ in rows:
        if ext_id is not None and _bad_id(ext_id):
            stats.malformed += 1  # once for the record
            continue
        pieces = split(raw)
        stats.sentences += len(pieces)
        if not pieces:
            stats.empty += 1
        for part, piece in enumerate(pieces):
            if ext_id is None:
                yield position, piece, None, part
            elif len(part_id := f"{ext_id}#{part + 1}") > MAX_ID_CHARS:
                stats.malformed += 1
            else:
                yield position, piece, part_id, part


def _limits(
    min_chars: int, max_chars: int, split: Splitter | None, language: LanguageCheck | None
) -> _Limits:
    for value, what in ((min_chars, "minimum length"), (max_chars, "maximum length")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"The {what} must be a whole number, not {value!r}.")
    if min_chars < 0:
        raise InputError(f"The minimum length must be 0 or more, not {min_chars}.")
    if max_chars < min_chars:
        raise InputError(
            f"The maximum length ({max_chars}) must not be below the minimum ({min_chars})."
        )
    return _Limits(min_chars, max_chars, split, language)


def read_texts(
    texts: Sequence[str],
    *,
    min_chars: int = DEFAULT_MIN_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
    split: Splitter | None = None,
    language: LanguageCheck | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Line]:
    """The sentences of in-memory texts, read as :func:`read_lines` reads a file's records
    (text i has position i).  Raises :class:`InputError` at once when an item is not a
    string."""
    for number, raw in enumerate(texts):
        if not isinstance(raw, str):
            raise InputError(f"Sentence {number + 1} is not a string.")
    limits = _limits(min_chars, max_chars, split, language)
    counts = stats if stats is not None else ReadStats()
    return _sentences(_text_rows(texts, counts), limits, counts)


def _text_rows(texts: Sequence[str], stats: ReadStats) -> Iterator[_Row]:
    for position, raw in enumerate(texts):
        stats.lines += 1
        if not encodable(raw):  # JSON escapes can smuggle in lone surrogates
            stats.invalid_utf8 += 1
        else:
            yield position, raw, None, 0


def encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogate, which JSON escapes and
    Python strings can hold)."""
    return not _SURROGATE.search(text)


def normalize(text: str) -> str:
    """Normalise a sentence.

    Removes byte-order marks, zero-width spaces and word joiners (U+200B, U+2060; the
    non-joiner and joiner U+200C and U+200D are spelling in some scripts and stay inside
    words, but go at a word's edges, where they join nothing), turns
    C0/C1 control characters (tab, CR, LF and NUL included) into spaces, applies Unicode
    NFC, collapses every run of Unicode whitespace (NBSP and U+3000 included) into one
    ASCII space and strips both ends.  The result is a fixed point: ``normalize`` is
    idempotent.
    """
    # Removal happens before NFC, so that dropping a zero-width character between a base
    # letter and a combining mark cannot leave a non-NFC string behind.
    if _TRANSLATED.search(text):
        text = text.translate(_TRANSLATION)
    text = unicodedata.normalize("NFC", text)
    words = text.split()
    if _JOINER.search(text):  # they join what is on both sides: at a word's edge, nothing
        words = [w for w in (word.strip(_JOINERS) for word in words) if w]
    return " ".join(words)


def text_hash(text: str) -> str:
    """Return the dedup key of a normalised sentence (hex BLAKE2b, 16-byte digest)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def reading(
    source: str,
    fmt: str = "auto",
    column: str | int | None = None,
    id_column: str | int | None = None,
    field: str | None = None,
    id_field: str | None = None,
) -> dict[str, object]:
    """How :func:`read_lines` reads a file with these options, the defaults filled in and
    the rest left out (``{"format": "tsv", "column": 2, "id_column": 1}``): two readings
    of one file are the same when these are equal."""
    fmt = resolved_format(source, fmt, column, id_column, field, id_field)
    if fmt == "tsv":
        return {"format": fmt, "column": 1 if column is None else column, "id_column": id_column}
    if fmt == "jsonl":
        return {
            "format": fmt,
            "field": DEFAULT_FIELD if field is None else field,
            "id_field": id_field,
        }
    return {"format": fmt}


def describe_reading(read: dict[str, object]) -> str:
    """``--format tsv --column 2 --id-column 1``: a reading as the command line gives it."""
    return " ".join(
        f"--{key.replace('_', '-')} {value}" for key, value in read.items() if value is not None
    )


def resolved_format(
    source: str | Path,
    fmt: str,
    column: str | int | None = None,
    id_column: str | int | None = None,
    field: str | None = None,
    id_field: str | None = None,
) -> str:
    """``fmt``, or for ``auto`` the format the file's name says, or else the options
    (a column: TSV; a field: JSON Lines; standard input has no name). Options of another
    format than the one chosen are refused, as is a name that says CSV or JSON, which
    are not read: they would be read as text, a record a line."""
    columns = [f"--{n}" for n, v in (("column", column), ("id-column", id_column)) if v is not None]
    fields = [f"--{n}" for n, v in (("field", field), ("id-field", id_field)) if v is not None]
    name = _display_name(source)
    if fmt == "auto":
        fmt = "txt" if isinstance(source, str) and source == _STDIN else detect_format(source)
        suffix = uncompressed_suffix(name)
        if fmt == "txt" and suffix in (".csv", ".json"):
            raise InputError(
                f"{name} is named as {suffix[1:].upper()}, which bitextdb does not read: "
                "convert it to TSV or JSON Lines, or give --format txt to read it as text, a "
                "sentence a line."
            )
        if columns and fields:
            raise InputError(
                f"{' and '.join(columns)} {'are' if len(columns) > 1 else 'is'} for TSV and "
                f"{' and '.join(fields)} for JSON Lines: give those of the format {name} has."
            )
        if fmt == "txt" and suffix != ".txt":  # the name tells nothing: the options do
            fmt = "tsv" if columns else "jsonl" if fields else fmt
    wrong = (columns if fmt != "tsv" else []) + (fields if fmt != "jsonl" else [])
    if wrong:
        given = {"tsv": "TSV", "jsonl": "JSON Lines"}
        kind = "TSV" if wrong[0] in ("--column", "--id-column") else "JSON Lines"
        raise InputError(
            f"{' and '.join(wrong)} {'apply' if len(wrong) > 1 else 'applies'} to {kind}, but "
            f"{name} is read as {given.get(fmt, 'text')}; give the --format it has."
        )
    return fmt


def uncompressed_suffix(name: str | Path) -> str:
    """The file name's extension before any compression's (.gz, .bz2, .xz), in lower case:
    what says the format of a file read or written."""
    lowered = Path(str(name)).name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
            break
    return Path(lowered).suffix


def detect_format(name: str) -> str:
    """Guess the format from a file name: ``"tsv"``, ``"jsonl"`` or ``"txt"``.

    A trailing ``.gz``, ``.bz2`` or ``.xz`` is ignored; ``.tsv``/``.tab`` mean TSV,
    ``.jsonl``/``.ndjson`` mean JSON Lines and anything else (``"-"`` included) is text.
    """
    suffix = uncompressed_suffix(name)
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "txt"


def _display_name(source: str | Path) -> str:
    if isinstance(source, str) and source == _STDIN:
        return _STDIN_NAME
    return str(source)


class _Chained(io.RawIOBase):
    """A raw stream that serves ``prefix`` and then the bytes of ``inner``.

    Failures of ``inner.read`` (I/O errors, corrupt compressed data) become InputError.
    Closing it does not close ``inner``.
    """

    def __init__(self, prefix: bytes, inner: BinaryIO, name: str, kind: str | None) -> None:
        super().__init__()
        self._prefix = prefix
        self._offset = 0
        self._inner = inner
        self._name = name
        self._kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._offset < len(self._prefix):
            count = min(len(view), len(self._prefix) - self._offset)
            view[:count] = self._prefix[self._offset : self._offset + count]
            self._offset += count
            if self._offset == len(self._prefix):
                self._prefix = b""
                self._offset = 0
            return count
        data = _guarded_read(self._inner, len(view), self._name, self._kind)
        view[: len(data)] = data
        return len(data)


def _guarded_read(stream: BinaryIO, size: int, name: str, kind: str | None) -> bytes:
    try:
        return stream.read(size)
    except InputError:
        raise
    except _DECOMPRESSION_ERRORS as exc:
        if kind is not None:
            raise InputError(
                f"{name} is not a valid {kind} file: its data is corrupt or truncated."
            ) from exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"Cannot read {name}: {reason}.") from exc


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of stream."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _open_file(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")  # closed by the caller's ExitStack
    except FileNotFoundError as exc:
        raise InputError(f"No such file: {path}") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path} is a directory, not a file.") from exc
    except PermissionError as exc:
        if path.is_dir():  # what Windows reports for a directory
            raise InputError(f"{path} is a directory, not a file.") from exc
        raise InputError(f"Permission denied: {path}") from exc
    except OSError as exc:
        raise InputError(f"Cannot open {path}: {exc.strerror or exc}.") from exc
    except ValueError as exc:  # e.g. an embedded NUL in the name
        raise InputError(f"Invalid file name: {path!r}") from exc


def _compression_of(magic: bytes) -> str | None:
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    # "BZh", a block size digit, then the magic of a block or of the end of the stream:
    # checking all of it keeps a text file that happens to start with "BZh" readable.
    if (
        len(magic) >= 10
        and magic.startswith(b"BZh")
        and magic[3:4] in b"123456789"
        and magic[4:10] in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
    ):
        return "bzip2"
    return None


@contextlib.contextmanager
def open_binary(source: str | Path) -> Iterator[BinaryIO]:
    """Open a file (``"-"`` is standard input) for binary reading, decompressing it if needed.

    The compression (gzip, bzip2, xz) is chosen from the magic bytes, not from the name,
    so a misnamed file still works.  Standard input is not closed on exit.  A missing
    file, a directory, an unreadable file or a corrupt compressed stream (also when the
    corruption is only found while reading) raise :class:`InputError`.
    """
    name = _display_name(source)
    with contextlib.ExitStack() as stack:
        if isinstance(source, str) and source == _STDIN:
            stdin_buffer = getattr(sys.stdin, "buffer", None)
            if stdin_buffer is None:
                raise InputError("Standard input is not available for reading.")
            base = cast(BinaryIO, stdin_buffer)
        else:
            base = stack.enter_context(_open_file(Path(source)))
        magic = _read_up_to(cast(BinaryIO, _Chained(b"", base, name, None)), 10)
        kind = _compression_of(magic)
        raw: io.RawIOBase = _Chained(magic, base, name, None)
        if kind is not None:
            compressed = cast(BinaryIO, raw)
            decoder: io.BufferedIOBase
            if kind == "gzip":
                decoder = stack.enter_context(gzip.GzipFile(fileobj=compressed, mode="rb"))
            elif kind == "bzip2":
                decoder = stack.enter_context(bz2.BZ2File(compressed, mode="rb"))
            else:
                decoder = stack.enter_context(lzma.LZMAFile(compressed, mode="rb"))
            raw = _Chained(b"", cast(BinaryIO, decoder), name, kind)
        stream = io.BufferedReader(raw, buffer_size=_BUFFER_SIZE)
        stack.callback(stream.close)
        yield cast(BinaryIO, stream)


def _looks_binary(head: bytes, at_eof: bool) -> bool:
    """Decide from the first bytes of a stream whether it is binary rather than UTF-8 text.

    Binary: a UTF-16/32 byte-order mark, NUL bytes in more than 1% of the bytes (and in
    more than one place), or more than 30% of the bytes not decodable as UTF-8.
    """
    if not head:
        return False
    if head.startswith(_UTF16_32_BOMS):
        return True
    nuls = head.count(0)
    if nuls > max(1, len(head) // 100):
        return True
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    decoded = decoder.decode(head, final=at_eof)  # a character cut at the end is not bad
    bad = len(_SURROGATE.findall(decoded))
    return bad * 10 > len(head) * 3


def _utf16_without_mark(head: bytes, at_eof: bool) -> str | None:
    """``UTF-16LE`` or ``UTF-16BE`` when ``head`` reads as such text with no byte-order mark:
    it decodes in that order (no lone surrogate, as bytes of another kind would give) to
    printable characters and white space, with line feeds (unless it is the whole file)."""
    whole = head[: len(head) // 2 * 2]
    if not whole:
        return None
    for order in ("UTF-16LE", "UTF-16BE"):
        decoder = codecs.getincrementaldecoder(order.lower())("strict")
        try:  # a pair of surrogates cut at the end of the head is no fault
            text = decoder.decode(whole, final=at_eof)
        except UnicodeDecodeError:
            continue
        readable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text)
        if text and readable >= 0.97 * len(text) and ("\n" in text or at_eof):
            return order
    return None


def _control_bytes(head: bytes) -> bool:
    """Whether ``head`` holds bytes no text file holds: NUL and the C0 controls other than
    tab, line feed, vertical tab, form feed, carriage return and escape."""
    return any(b < 0x20 and b not in _TEXT_CONTROLS for b in head)


_TEXT_CONTROLS = frozenset(b"\t\n\v\f\r\x1b")


def _records(stream: BinaryIO) -> Iterator[bytes | None]:
    """Yield each line without its line break (and trailing CR); None for an over-long one."""
    limit = MAX_RECORD_BYTES + 2  # room for the CR LF
    while True:
        chunk = stream.readline(limit)
        if not chunk:
            return
        if chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        elif len(chunk) == limit:
            while True:  # drain the rest of the line, one bounded piece at a time
                rest = stream.readline(_BUFFER_SIZE)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        if chunk.startswith(_UTF8_BOM):  # files joined with cat: each may begin with one
            chunk = chunk[len(_UTF8_BOM) :]
        yield None if len(chunk) > MAX_RECORD_BYTES else chunk


def _check_column(value: str | int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"The {what} must be a column name or a 1-based number, not {value!r}.")
    if isinstance(value, int) and value < 1:
        raise InputError(f"The {what} number must be 1 or more (columns count from 1).")
    if isinstance(value, str) and not value.strip():
        raise InputError(f"The {what} name must not be empty.")


def _split_field(value: str | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(not part for part in value.split(".")):
        raise InputError(f"The {what} must be a field name or a dotted path such as 'meta.text'.")
    return tuple(value.split("."))


def read_lines(
    source: str | Path,
    fmt: str = "auto",
    *,
    column: str | int | None = None,
    id_column: str | int | None = None,
    field: str | None = None,
    id_field: str | None = None,
    min_chars: int = DEFAULT_MIN_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
    split: Splitter | None = None,
    language: LanguageCheck | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Line]:
    """Stream the normalised sentences of a corpus file.

    ``source`` is a path or ``"-"`` for standard input, plain or gzip/bzip2/xz compressed.
    ``fmt`` is one of :data:`FORMATS`; ``"auto"`` picks it with :func:`detect_format`.

    * ``txt``: every line is a sentence.
    * ``tsv``: tab-separated, no quoting.  ``column`` (default 1) and ``id_column`` are
      1-based numbers, or header names; when either is a name the first row is a header.
    * ``jsonl``: one JSON object per line; ``field`` (default ``"text"``) and ``id_field``
      are keys or dotted paths such as ``"meta.text"``.  A numeric id becomes a string.

    Each text is normalised with :func:`normalize`; records that end up empty, shorter
    than ``min_chars`` or longer than ``max_chars`` characters, not valid UTF-8, or
    malformed (a short TSV row; a JSONL line that is not an object or lacks a string
    field) are skipped and counted in ``stats`` (updated in place when given).  Skipped
    records still take up a position.  With ``split`` (see
    :func:`bitextdb.segment.sentence_splitter`) every record is split into sentences
    first, which share the record's position and are told apart by ``Line.part``; the
    length limits then apply to each sentence, and an external id becomes ``ID#N``.
    With ``language`` (see :func:`bitextdb.language_id.language_check`) a sentence it
    turns down is skipped and counted as ``wrong_language``.

    Arguments are checked at once; the file is opened when iteration starts.  Raises
    :class:`InputError` for bad arguments, an unreadable or binary file, a corrupt
    compressed stream or a TSV header without the requested column.
    """
    if fmt not in FORMATS:
        raise InputError(f"Unknown format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    limits = _limits(min_chars, max_chars, split, language)
    fmt = resolved_format(source, fmt, column, id_column, field, id_field)
    field = DEFAULT_FIELD if field is None else field
    if fmt == "tsv":
        _check_column(column, "column")
        _check_column(id_column, "id column")
    field_path = _split_field(field, "field") if fmt == "jsonl" else None
    id_path = _split_field(id_field, "id field") if fmt == "jsonl" else None
    return _read(
        source,
        fmt,
        column=1 if column is None else column,
        id_column=id_column,
        field=field,
        field_path=field_path or (),
        id_field=id_field,
        id_path=id_path,
        limits=limits,
        stats=stats if stats is not None else ReadStats(),
    )


def _read(
    source: str | Path,
    fmt: str,
    *,
    column: str | int,
    id_column: str | int | None,
    field: str,
    field_path: tuple[str, ...],
    id_field: str | None,
    id_path: tuple[str, ...] | None,
    limits: _Limits,
    stats: ReadStats,
) -> Iterator[Line]:
    name = _display_name(source)
    with open_binary(source) as stream:
        head = _read_up_to(stream, SNIFF_BYTES)
        if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):  # UTF-32's marks
            raise InputError(f"{name} is UTF-32 text; convert it to UTF-8 (iconv -f UTF-32).")
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16's byte-order marks
            raise InputError(f"{name} is UTF-16 text; convert it to UTF-8 (iconv -f UTF-16).")
        if _looks_binary(head, at_eof=len(head) < SNIFF_BYTES):
            order = _utf16_without_mark(head, at_eof=len(head) < SNIFF_BYTES)
            if order:
                raise InputError(
                    f"{name} looks like UTF-16 text without a byte-order mark; convert it to "
                    f"UTF-8 (iconv -f {order})."
                )
            if _control_bytes(head):
                raise InputError(f"{name} looks like a binary file, not text.")
            raise InputError(
                f"{name} is not UTF-8 text: most likely text in another encoding (Shift-JIS, "
                "GB18030, Windows-1251, Latin-1...); convert it to UTF-8 first "
                "(iconv -f ENCODING -t UTF-8)."
            )
        if head.startswith(_UTF8_BOM):
            head = head[len(_UTF8_BOM) :]
        if head.count(b"\r") > 1 and b"\n" not in head:
            raise InputError(
                f"{name} ends its lines with CR alone (classic Mac OS), which bitextdb does "
                "not take for line breaks: convert it first (tr '\\r' '\\n' < FILE)."
            )
        chained = io.BufferedReader(_Chained(head, stream, name, None), buffer_size=_BUFFER_SIZE)
        records = _records(cast(BinaryIO, chained))
        if fmt == "tsv":
            rows = _tsv_rows(records, name, column, id_column, stats)
        elif fmt == "jsonl":
            rows = _jsonl_rows(records, field, field_path, id_field, id_path, stats, name)
        else:
            rows = _txt_rows(records, stats)
        yield from _sentences(rows, limits, stats)


# Each row generator yields (position, raw text, ext_id, 0) for records worth normalising
# and counts the records it skips itself (too long, invalid UTF-8, malformed, blank JSONL).


def _decoded(records: Iterator[bytes | None], stats: ReadStats) -> Iterator[tuple[int, str]]:
    for position, record in enumerate(records):
        stats.lines += 1
        if record is None:
            stats.too_long += 1
            continue
        try:
            yield position, record.decode("utf-8")
        except UnicodeDecodeError:
            stats.not_utf8(position)


def _txt_rows(records: Iterator[bytes | None], stats: ReadStats) -> Iterator[_Row]:
    for position, text in _decoded(records, stats):
        yield position, text, None, 0


def _tsv_rows(
    records: Iterator[bytes | None],
    name: str,
    column: str | int,
    id_column: str | int | None,
    stats: ReadStats,
) -> Iterator[_Row]:
    has_header = isinstance(column, str) or isinstance(id_column, str)
    header: list[str] = []
    if has_header:
        first = next(records, _MISSING)
        if first is _MISSING:
            return  # an empty file has nothing to read
        if not isinstance(first, bytes):
            raise InputError(f"The header row of {name} is longer than {MAX_RECORD_BYTES} bytes.")
        try:
            header = [normalize(cell) for cell in first.decode("utf-8").split("\t")]
        except UnicodeDecodeError as exc:
            raise InputError(f"The header row of {name} is not valid UTF-8.") from exc

    def index_of(wanted: str | int) -> int:
        if isinstance(wanted, int):
            return wanted - 1
        key = normalize(wanted)
        if key not in header:
            names = ", ".join(header)
            raise InputError(f"{name} has no column {wanted!r}; columns are: {names}")
        return header.index(key)

    text_index = index_of(column)
    id_index = None if id_column is None else index_of(id_column)
    needed = max(text_index, -1 if id_index is None else id_index) + 1
    widest = found = 0
    for position, line in _decoded(records, stats):
        cells = line.split("\t")
        if len(cells) < needed:
            stats.malformed += 1
            widest = max(widest, len(cells))
            continue
        found += 1
        ext_id = None if id_index is None else cells[id_index].strip()
        yield position, cells[text_index], ext_id, 0
    if widest and not found:  # a column number no row reaches: a mistake, not a short row
        raise InputError(
            f"No row of {name} has {needed} columns (the widest has {widest}); check "
            "--column and --id-column. Nothing was changed."
        )


def _lookup(obj: dict[str, object], field: str, path: tuple[str, ...]) -> object:
    if field in obj:  # a key that itself contains dots wins over the dotted path
        return obj[field]
    current: object = obj
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _jsonl_rows(
    records: Iterator[bytes | None],
    field: str,
    field_path: tuple[str, ...],
    id_field: str | None,
    id_path: tuple[str, ...] | None,
    stats: ReadStats,
    name: str,
) -> Iterator[_Row]:
    objects = found = not_objects = 0
    for position, line in _decoded(records, stats):
        if not line.strip():
            stats.empty += 1
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            stats.malformed += 1
            not_objects += 1
            continue
        if not isinstance(obj, dict):
            stats.malformed += 1
            not_objects += 1
            continue
        objects += 1
        text = _lookup(obj, field, field_path)
        if not isinstance(text, str):
            stats.malformed += 1
            continue
        ext_id: str | None = None
        if id_field is not None and id_path is not None:
            raw_id = _lookup(obj, id_field, id_path)
            if isinstance(raw_id, int) and not isinstance(raw_id, bool):
                ext_id = str(raw_id)
            elif isinstance(raw_id, str):
                ext_id = raw_id.strip()
            else:
                stats.malformed += 1
                continue
        found += 1
        # JSON escapes can smuggle in lone surrogates, which are not encodable text.
        if not encodable(text) or (ext_id is not None and not encodable(ext_id)):
            stats.invalid_utf8 += 1
            continue
        yield position, text, ext_id, 0
    if not objects and not_objects:  # plain text, an HTML page... read as JSON Lines
        raise InputError(
            f"No line of {name} is a JSON object: it is not JSON Lines (give --format txt "
            "for plain text). Nothing was changed."
        )
    if objects and not found:  # a field no record has: a mistake, not a bad record
        wanted = f"a string field {field!r}"
        if id_field is not None:
            wanted += f" and an id field {id_field!r}"
        raise InputError(
            f"No record of {name} has {wanted}; check --field and --id-field. Nothing was changed."
        )
