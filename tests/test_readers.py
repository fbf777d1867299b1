"""Tests of bitextdb.readers: formats, normalisation, compression, bad input."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitextdb import readers
from bitextdb.config import MAX_SENTENCE_CHARS
from bitextdb.errors import InputError
from bitextdb.readers import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MIN_CHARS,
    FORMATS,
    MAX_RECORD_BYTES,
    Line,
    ReadStats,
    detect_format,
    normalize,
    open_binary,
    read_lines,
    text_hash,
)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def texts(lines: list[Line]) -> list[str]:
    return [line.text for line in lines]


def read_all(source: str | Path, fmt: str = "auto", **kwargs: object) -> tuple[list[Line], dict]:
    stats = ReadStats()
    lines = list(read_lines(source, fmt, stats=stats, **kwargs))  # type: ignore[arg-type]
    return lines, stats.as_dict()


# --- constants, stats, hashing, format detection -------------------------------------------


def test_constants() -> None:
    assert DEFAULT_MIN_CHARS == 2
    assert DEFAULT_MAX_CHARS == 1000
    assert FORMATS == ("auto", "txt", "tsv", "jsonl")


def test_read_stats_dicts() -> None:
    stats = ReadStats(lines=5, empty=1, malformed=2)
    assert stats.as_dict() == {
        "lines": 5,
        "empty": 1,
        "too_short": 0,
        "too_long": 0,
        "invalid_utf8": 0,
        "malformed": 2,
        "wrong_language": 0,
        "sentences": 0,
    }
    assert stats.skipped() == {"empty": 1, "malformed": 2}
    assert ReadStats(lines=1, sentences=3).skipped() == {}  # split sentences are no skips
    assert ReadStats().skipped() == {}


def test_text_hash() -> None:
    import hashlib

    expected = hashlib.blake2b("héllo".encode(), digest_size=16).hexdigest()
    assert text_hash("héllo") == expected
    assert len(text_hash("x")) == 32
    assert text_hash("a") != text_hash("b")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("corpus.txt", "txt"),
        ("corpus", "txt"),
        ("-", "txt"),
        ("a.tsv", "tsv"),
        ("a.TAB", "tsv"),
        ("dir.tsv/a.txt", "txt"),
        ("a.tsv.gz", "tsv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson.bz2", "jsonl"),
        ("a.jsonl.xz", "jsonl"),
        ("a.txt.gz", "txt"),
        ("a.gz", "txt"),
        ("a.json", "txt"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


# --- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("e\u0301t\u00e9", "\u00e9t\u00e9"),  # NFC
        ("a\u00a0b\u3000c", "a b c"),  # NBSP, ideographic space
        ("a\tb\t\tc", "a b c"),  # tabs
        ("  a   b  ", "a b"),
        ("a\u200bb\u2060c", "abc"),  # zero-width space, word joiner
        ("\u200d\u200c\u200d", ""),  # joiners alone join nothing: an empty line
        ("\u200cthe house \u200d is\u200c old", "the house is old"),  # at words' edges
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),  # ZWNJ: Persian spelling
        ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u200d\u0937"),  # ZWJ: Devanagari half form
        (
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        ),  # emoji
        ("\ufeffa\ufeffb", "ab"),  # BOM anywhere
        ("a\x00b", "a b"),  # NUL
        ("a\x07b\x1bc", "a b c"),  # C0 controls
        ("a\x85b\x9fc\x7fd", "a b c d"),  # C1 controls, DEL
        ("a\rb\nc", "a b c"),
        ("e\u200b\u0301", "\u00e9"),  # removing ZWSP lets the accent compose
        ("", ""),
        (" \t\u00a0 ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip()
    assert "  " not in once


# --- plain text -----------------------------------------------------------------------------


def test_txt_basic_blank_lines_and_positions(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "first line\n\nsecond line\n   \nx\nthird line")
    lines, stats = read_all(path)
    assert lines == [
        Line(0, "first line"),
        Line(2, "second line"),
        Line(5, "third line"),
    ]
    assert stats == {
        "lines": 6,
        "empty": 2,
        "too_short": 1,
        "too_long": 0,
        "invalid_utf8": 0,
        "malformed": 0,
        "wrong_language": 0,
        "sentences": 0,
    }


def test_txt_crlf_bom_and_lone_cr(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"\xef\xbb\xbfone\r\ntwo\rhalves\r\nthree\r\n")
    lines, stats = read_all(path)
    assert lines == [Line(0, "one"), Line(1, "two halves"), Line(2, "three")]
    assert stats["lines"] == 3


def test_txt_normalises_each_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "cafe\u0301\u00a0noir\n\tzero\u200bwidth\x00 \n")
    assert texts(read_all(path)[0]) == ["caf\u00e9 noir", "zerowidth"]


def test_positions_align_with_raw_lines(tmp_path: Path) -> None:
    raw = [b"good one", b"\xff\xfe bad", b"", b"a", b"x" * 50, b"good two", b"\xc3\x28"]
    path = write(tmp_path / "a.txt", b"\n".join(raw) + b"\n")
    lines, stats = read_all(path, max_chars=20)
    assert lines == [Line(0, "good one"), Line(5, "good two")]
    for line in lines:
        assert raw[line.position].decode() == line.text
    assert stats == {
        "lines": 7,
        "empty": 1,
        "too_short": 1,
        "too_long": 1,
        "invalid_utf8": 2,
        "malformed": 0,
        "wrong_language": 0,
        "sentences": 0,
    }


def test_length_limits(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "a\nab\nabc\nabcd\nabcde\n")
    lines, stats = read_all(path, min_chars=2, max_chars=4)
    assert texts(lines) == ["ab", "abc", "abcd"]
    assert stats["too_short"] == 1
    assert stats["too_long"] == 1
    lines, _ = read_all(path, min_chars=0, max_chars=1)
    assert texts(lines) == ["a"]


def test_length_limits_count_characters_not_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "\u00e9\u00e9\u00e9\n")
    assert texts(read_all(path, min_chars=3, max_chars=3)[0]) == ["\u00e9\u00e9\u00e9"]


def test_stats_are_optional_and_accumulate(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "hello\n\n")
    assert texts(list(read_lines(path))) == ["hello"]
    stats = ReadStats()
    list(read_lines(path, stats=stats))
    list(read_lines(str(path), stats=stats))
    assert stats.lines == 4
    assert stats.empty == 2


def test_invalid_utf8_lines_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"ok one\n\xe9t\xe9 latin-1\nok two\n\xed\xa0\x80 surrogate\n")
    lines, stats = read_all(path)
    assert lines == [Line(0, "ok one"), Line(2, "ok two")]
    assert stats["invalid_utf8"] == 2


def test_very_long_line_is_skipped_with_bounded_memory(tmp_path: Path) -> None:
    long_line = b"x" * (4 * MAX_RECORD_BYTES)
    path = write(tmp_path / "a.txt", b"before\n" + long_line + b"\r\nafter\n")
    tracemalloc.start()
    try:
        lines, stats = read_all(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [Line(0, "before"), Line(2, "after")]
    assert stats["too_long"] == 1
    assert stats["lines"] == 3
    assert peak < 3 * MAX_RECORD_BYTES  # the line of four times the limit was never held whole


def test_long_line_at_end_without_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"before\n" + b"y" * (MAX_RECORD_BYTES + 10))
    lines, stats = read_all(path)
    assert lines == [Line(0, "before")]
    assert stats["too_long"] == 1


def test_line_just_over_the_byte_limit(tmp_path: Path) -> None:
    exact = b"z" * MAX_RECORD_BYTES
    path = write(tmp_path / "a.txt", exact + b"\r\n" + exact + b"z\n" + b"ok\n")
    lines, stats = read_all(path, max_chars=MAX_RECORD_BYTES)
    assert [line.position for line in lines] == [0, 2]
    assert stats["too_long"] == 1


# --- compression and sources ----------------------------------------------------------------

CONTENT = "alpha beta\n\ngamma delta\n"


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)],
)
def test_compressed_files(tmp_path: Path, suffix: str, compress: object) -> None:
    path = write(tmp_path / f"a.txt{suffix}", compress(CONTENT.encode()))  # type: ignore[operator]
    lines, stats = read_all(path)
    assert lines == [Line(0, "alpha beta"), Line(2, "gamma delta")]
    assert stats["lines"] == 3


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_misnamed_compressed_file(tmp_path: Path, compress: object) -> None:
    path = write(tmp_path / "plain.txt", compress(CONTENT.encode()))  # type: ignore[operator]
    assert texts(read_all(path)[0]) == ["alpha beta", "gamma delta"]


def test_compressed_tsv_detected_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv.gz", gzip.compress(b"x\tfirst text\ny\tsecond text\n"))
    assert texts(read_all(path, column=2)[0]) == ["first text", "second text"]


def test_text_starting_with_bzh_is_not_bzip2(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "BZh9 is not a compressed file\n")
    assert texts(read_all(path)[0]) == ["BZh9 is not a compressed file"]


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt.gz", b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    with pytest.raises(InputError, match="not a valid gzip file"):
        list(read_lines(path))


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(CONTENT.encode() * 100)
    path = write(tmp_path / "a.txt.gz", data[: len(data) // 2])
    with pytest.raises(InputError, match="not a valid gzip file"):
        list(read_lines(path))


@pytest.mark.parametrize(("compress", "kind"), [(bz2.compress, "bzip2"), (lzma.compress, "xz")])
def test_corrupt_bz2_and_xz(tmp_path: Path, compress: object, kind: str) -> None:
    data = bytearray(compress(CONTENT.encode() * 50))  # type: ignore[operator]
    for i in range(12, len(data) - 4):
        data[i] ^= 0x55
    path = write(tmp_path / "a.txt", bytes(data))
    with pytest.raises(InputError, match=f"not a valid {kind} file"):
        list(read_lines(path))


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStdin(b"from stdin\n\nsecond\n")
    monkeypatch.setattr(sys, "stdin", fake)
    lines, stats = read_all("-")
    assert lines == [Line(0, "from stdin"), Line(2, "second")]
    assert stats["lines"] == 3
    assert not fake.buffer.closed


def test_stdin_gzip_and_tsv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(gzip.compress(b"1\tone text\n2\ttwo text\n")))
    lines, _ = read_all("-", "tsv", column=2, id_column=1)
    assert lines == [Line(0, "one text", "1"), Line(1, "two text", "2")]


def test_stdin_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(InputError, match="Standard input"):
        list(read_lines("-"))


def test_open_binary_plain_and_compressed(tmp_path: Path) -> None:
    plain = write(tmp_path / "a.bin", b"raw bytes")
    packed = write(tmp_path / "b.bin", gzip.compress(b"raw bytes"))
    for path in (plain, packed, str(packed)):
        with open_binary(path) as stream:
            assert stream.read() == b"raw bytes"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError, match=r"No such file: .*nope\.txt"):
        list(read_lines(missing))
    with pytest.raises(InputError, match="No such file"), open_binary(missing):
        pass


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        list(read_lines(tmp_path))


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "secret.txt", "hidden\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(readers, "open", refuse, raising=False)
    with pytest.raises(InputError, match=r"Permission denied: .*secret\.txt"):
        list(read_lines(path))


def test_read_error_becomes_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.txt", "text\n")

    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(readers, "open", lambda *a, **k: Broken(), raising=False)
    with pytest.raises(InputError, match=r"Cannot read .*Input/output error"):
        list(read_lines(path))


# --- binary detection -----------------------------------------------------------------------


def test_png_is_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 4000)
    with pytest.raises(InputError, match="looks like a binary file, not text"):
        next(read_lines(path))


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("shift_jis", "日本語の文です。\nもう一つの文。\n"),
        ("gb18030", "这是一个句子。\n还有一个。\n"),
        ("cp1251", "Привет, мир.\nЭто предложение.\n"),
    ],
)
def test_text_in_a_legacy_encoding_is_named_so_not_binary(
    tmp_path: Path, encoding: str, text: str
) -> None:
    path = write(tmp_path / "legacy.txt", (text * 20).encode(encoding))
    with pytest.raises(InputError, match=r"is not UTF-8 text.*iconv -f ENCODING"):
        next(read_lines(path))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_are_named(tmp_path: Path, encoding: str) -> None:
    """UTF-32's little-endian mark starts as UTF-16's: it was called UTF-16, and the iconv
    advice garbled it."""
    path = write(tmp_path / "wide.txt", "\ufeffein Satz\nnoch einer\n".encode(encoding))
    name = encoding[:6].upper()
    with pytest.raises(
        InputError, match=rf"is {name} text; convert it to UTF-8 \(iconv -f {name}\)"
    ):
        next(read_lines(path))


@pytest.mark.parametrize(
    "text",
    [
        "ein Satz\nnoch einer, schön\n" * 20,
        "这是一个句子。\n还有一个句子。\n" * 40,
        "هذه جملة.\nوهذه جملة أخرى.\n" * 40,
        "😀 🎉 👍\n" * 40,
        "hi\n",
    ],
    ids=["latin", "chinese", "arabic", "emoji", "tiny"],
)
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_mark_is_named(tmp_path: Path, encoding: str, text: str) -> None:
    """Without a byte-order mark such a file was called binary (in scripts whose high
    bytes are not NUL, still so after the first fix, which counted NUL bytes)."""
    path = write(tmp_path / "wide.txt", text.encode(encoding))
    name = encoding.replace("-", "").upper().replace("UTF16", "UTF-16")
    with pytest.raises(InputError, match=rf"UTF-16 text without a byte-order mark.*-f {name}\)"):
        next(read_lines(path))


def test_random_bytes_are_binary(tmp_path: Path) -> None:
    import random

    data = random.Random(0).randbytes(20000)
    path = write(tmp_path / "noise.txt", data)
    with pytest.raises(InputError, match="binary"):
        list(read_lines(path))


def test_gzipped_binary_is_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gz", gzip.compress(b"\x00\x01\x02\x03" * 1000))
    with pytest.raises(InputError, match="binary"):
        list(read_lines(path))


def test_utf16_is_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "hello world\nsecond line\n".encode("utf-16"))
    with pytest.raises(InputError, match="binary"):
        list(read_lines(path))


def test_binary_detected_before_anything_is_yielded(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"a fine first line\n" + b"\x00" * 500)
    stats = ReadStats()
    with pytest.raises(InputError, match="binary"):
        next(read_lines(path, stats=stats))
    assert stats.lines == 0


def test_stray_nul_is_not_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"some\x00text\n" + b"more ordinary text\n" * 10)
    lines, _ = read_all(path)
    assert lines[0] == Line(0, "some text")
    assert len(lines) == 11


def test_mostly_latin1_text_is_read_with_bad_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"plain ascii line\ncaf\xe9 au lait\nanother line\n")
    lines, stats = read_all(path)
    assert texts(lines) == ["plain ascii line", "another line"]
    assert stats["invalid_utf8"] == 1


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"")
    assert read_all(path) == ([], ReadStats().as_dict())


# --- TSV ------------------------------------------------------------------------------------


def test_tsv_by_header_name(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "id\tsrc\ttext\nk1\tx\tHello there\nk2\ty\tGood bye\n")
    lines, stats = read_all(path, column="text", id_column="id")
    assert lines == [Line(0, "Hello there", "k1"), Line(1, "Good bye", "k2")]
    assert stats["lines"] == 2  # header excluded


def test_tsv_by_index_has_no_header(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "id\ttext\nk1\tHello there\n")
    lines, _ = read_all(path, column=2, id_column=1)
    assert lines == [Line(0, "text", "id"), Line(1, "Hello there", "k1")]


def test_tsv_default_column_is_first(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "first col\tsecond col\n")
    assert texts(read_all(path)[0]) == ["first col"]


def test_tsv_header_name_with_index_id(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "key\ttext\nk1\tHello there\n")
    lines, _ = read_all(path, column="text", id_column=1)
    assert lines == [Line(0, "Hello there", "k1")]


def test_tsv_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "id\tsrc\ttgt\n1\ta\tb\n")
    with pytest.raises(InputError) as info:
        list(read_lines(path, column="text"))
    assert str(info.value) == f"{path} has no column 'text'; columns are: id, src, tgt"
    with pytest.raises(InputError, match="no column 'ident'"):
        list(read_lines(path, column="src", id_column="ident"))


def test_tsv_short_rows_are_malformed(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "a\tfirst text\nb\nc\tthird text\n\n")
    lines, stats = read_all(path, column=2, id_column=1)
    assert lines == [Line(0, "first text", "a"), Line(2, "third text", "c")]
    assert stats["malformed"] == 2
    assert stats["lines"] == 4


def test_tsv_crlf_and_bom_header(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", b"\xef\xbb\xbfid\ttext\r\n7\tWindows line\r\n")
    lines, _ = read_all(path, column="text", id_column="id")
    assert lines == [Line(0, "Windows line", "7")]


def test_tsv_header_only_and_empty(tmp_path: Path) -> None:
    assert read_all(write(tmp_path / "a.tsv", "id\ttext\n"), column="text")[0] == []
    assert read_all(write(tmp_path / "b.tsv", ""), column="text")[0] == []


def test_tsv_invalid_utf8_row(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", b"1\tgood row\n2\tbad \xff row\n")
    lines, stats = read_all(path, column=2)
    assert texts(lines) == ["good row"]
    assert stats["invalid_utf8"] == 1


def test_tsv_bad_header(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", b"i\xffd\ttext\n1\trow\n")
    with pytest.raises(InputError, match=r"header row .* not valid UTF-8"):
        list(read_lines(path, column="text"))


@pytest.mark.parametrize("column", [0, -1, True, "", 1.5])
def test_tsv_bad_column_argument(tmp_path: Path, column: object) -> None:
    path = write(tmp_path / "a.tsv", "a\tb\n")
    with pytest.raises(InputError):
        read_lines(path, column=column)  # type: ignore[arg-type]


# --- JSON Lines -----------------------------------------------------------------------------


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_jsonl_default_field_and_id(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        jsonl({"text": "first one", "id": "a1"}, {"text": " second\u00a0one ", "id": 7}),
    )
    lines, _ = read_all(path, id_field="id")
    assert lines == [Line(0, "first one", "a1"), Line(1, "second one", "7")]
    assert read_all(path)[0] == [Line(0, "first one"), Line(1, "second one")]


def test_jsonl_custom_and_dotted_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.ndjson",
        jsonl(
            {"meta": {"text": "nested text", "doc": {"id": "d1"}}, "sentence": "flat text"},
            {"meta.text": "literal dotted key", "meta": {"doc": {"id": "d2"}}},
        ),
    )
    lines, stats = read_all(path, field="meta.text", id_field="meta.doc.id")
    assert lines == [Line(0, "nested text", "d1"), Line(1, "literal dotted key", "d2")]
    lines, stats = read_all(path, field="sentence")
    assert lines == [Line(0, "flat text")]
    assert stats["malformed"] == 1


def test_jsonl_malformed_lines_are_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        jsonl(
            {"text": "good line"},
            "{not json",
            "[1, 2, 3]",
            '"just a string"',
            {"other": "no text field"},
            {"text": 42},
            {"text": None},
            {"text": ["a list"]},
            {"text": {"nested": "dict"}},
            "",
            "   ",
            {"text": ""},
            '{"text": "\\ud800 lone surrogate"}',
            "[" * 5000,
            {"text": "last good"},
        ),
    )
    lines, stats = read_all(path)
    assert lines == [Line(0, "good line"), Line(14, "last good")]
    assert stats == {
        "lines": 15,
        "empty": 3,
        "too_short": 0,
        "too_long": 0,
        "invalid_utf8": 1,
        "malformed": 9,
        "wrong_language": 0,
        "sentences": 0,
    }


@pytest.mark.parametrize(
    "content",
    ["plain text, not JSON\nanother line\n", "<html><body>gone</body></html>\n", '"a"\n[1]\n'],
    ids=["text", "html", "not-objects"],
)
def test_jsonl_without_one_object_is_refused(tmp_path: Path, content: str) -> None:
    """Such a file was read as lines all malformed: its source, read again, lost every
    sentence it had brought, with exit 0."""
    path = write(tmp_path / "a.jsonl", content)
    with pytest.raises(InputError, match=r"No line of .* is a JSON object"):
        read_all(path)
    # blank lines alone are an empty file, not a wrong one
    assert read_all(write(tmp_path / "b.jsonl", "\n  \n"))[0] == []


def test_the_longest_sentence_fits_a_record_in_any_script(tmp_path: Path) -> None:
    """The record limit was 1 MiB, so a line of 600,000 'é' (1.2 MB) was skipped as too
    long below a max_chars of 1,000,000."""
    assert 4 * MAX_SENTENCE_CHARS <= MAX_RECORD_BYTES
    longest = "\U0001f600" * MAX_SENTENCE_CHARS  # four bytes each
    path = write(tmp_path / "a.txt", "é" * 600_000 + "\n" + longest + "\n" + longest + "x\n")
    lines, stats = read_all(path, max_chars=MAX_SENTENCE_CHARS)
    assert [(line.position, len(line.text)) for line in lines] == [
        (0, 600_000),
        (1, MAX_SENTENCE_CHARS),
    ]
    assert stats["too_long"] == 1


def test_jsonl_bad_id_is_malformed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        jsonl({"text": "has id", "id": "x"}, {"text": "no id"}, {"text": "bool id", "id": True}),
    )
    lines, stats = read_all(path, id_field="id")
    assert lines == [Line(0, "has id", "x")]
    assert stats["malformed"] == 2


def test_jsonl_escaped_control_characters_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", jsonl({"text": "tab\there\u0000nul\nnewline"}))
    assert texts(read_all(path)[0]) == ["tab here nul newline"]


def test_jsonl_explicit_format_overrides_name(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", jsonl({"text": "from json"}))
    assert texts(read_all(path, "jsonl")[0]) == ["from json"]


@pytest.mark.parametrize("field", ["", "a..b", ".a", "a."])
def test_jsonl_bad_field_argument(tmp_path: Path, field: str) -> None:
    path = write(tmp_path / "a.jsonl", jsonl({"text": "x"}))
    with pytest.raises(InputError):
        read_lines(path, field=field)


# --- argument checks ------------------------------------------------------------------------


def test_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "x\n")
    with pytest.raises(InputError, match="auto, txt, tsv, jsonl"):
        read_lines(path, "csv")


@pytest.mark.parametrize(("min_chars", "max_chars"), [(-1, 10), (5, 4), (1.0, 10), (0, None)])
def test_bad_length_limits(tmp_path: Path, min_chars: object, max_chars: object) -> None:
    path = write(tmp_path / "a.txt", "x\n")
    with pytest.raises(InputError):
        read_lines(path, min_chars=min_chars, max_chars=max_chars)  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------


# Arbitrary bytes are nearly always binary noise; the other two strategies produce text-like
# input so that the per-record code paths get exercised too.
_PIECES = [
    b"\n",
    b"\r\n",
    b"\r",
    b"\t",
    b" ",
    b"a",
    b"bc",
    b"\xc3\xa9",
    b"\xe3\x80\x80",
    b"\xc2\xa0",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\xe2\x80\x8b",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b'"',
    b'"text"',
    b'"id"',
    b"1",
    b"null",
    b"\\u0000",
    b"\\ud800",
    b"\\",
    b'"x y"',
]
FUZZ_BYTES = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=500).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from(_PIECES), max_size=300).map(b"".join),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=FUZZ_BYTES, min_chars=st.integers(0, 5), span=st.integers(0, 50))
def test_arbitrary_bytes_never_crash(
    tmp_path: Path, data: bytes, min_chars: int, span: int
) -> None:
    max_chars = min_chars + span
    path = write(tmp_path / "fuzz.bin", data)
    for fmt, kwargs in (("txt", {}), ("tsv", {"column": 1}), ("jsonl", {"id_field": "id"})):
        stats = ReadStats()
        try:
            lines = list(
                read_lines(
                    path, fmt, min_chars=min_chars, max_chars=max_chars, stats=stats, **kwargs
                )
            )
        except InputError as exc:
            assert str(exc)
            continue
        positions = [line.position for line in lines]
        assert positions == sorted(set(positions))
        for line in lines:
            assert isinstance(line, Line)
            assert normalize(line.text) == line.text
            assert min_chars <= len(line.text) <= max_chars
            assert line.text
            text_hash(line.text)  # always encodable
        assert len(lines) + sum(stats.skipped().values()) == stats.lines


def test_options_choose_the_format_a_name_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = '{"id": 7, "text": "the dog sleeps"}\n{"id": 8, "text": "a cat"}\n'
    monkeypatch.setattr(sys, "stdin", FakeStdin(records.encode()))
    lines, _ = read_all("-", field="text", id_field="id")  # standard input: JSON Lines
    assert [(line.text, line.ext_id) for line in lines] == [("the dog sleeps", "7"), ("a cat", "8")]
    rows = write(tmp_path / "corpus", "id\ttext\n1\tthe first row\n2\tthe second row\n")
    assert texts(read_all(rows, column="text")[0]) == ["the first row", "the second row"]
    named = write(tmp_path / "corpus.jsonl", records)
    assert texts(read_all(named, field="text")[0]) == ["the dog sleeps", "a cat"]
    assert readers.reading(str(named)) == readers.reading(str(named), field="text")


@pytest.mark.parametrize(
    ("name", "fmt", "options", "message"),
    [
        (
            "n.tsv",
            "auto",
            {"field": "text"},
            "--field applies to JSON Lines, but .*n.tsv is read as TSV",
        ),
        (
            "n.jsonl",
            "auto",
            {"column": 2},
            "--column applies to TSV, but .*n.jsonl is read as JSON",
        ),
        ("n.txt", "txt", {"id_field": "id"}, "--id-field applies to JSON Lines, .* read as text"),
        ("n", "auto", {"column": 2, "field": "t"}, "--column is for TSV and --field for JSON"),
        (
            "n.txt",
            "auto",
            {"field": "t"},
            "--field applies to JSON Lines, but .*n.txt is read as text",
        ),
        ("n.csv", "auto", {}, "named as CSV, which bitextdb does not read"),
        ("n.json.gz", "auto", {}, "named as JSON, which bitextdb does not read"),
    ],
)
def test_options_of_another_format_are_refused(
    tmp_path: Path, name: str, fmt: str, options: dict, message: str
) -> None:
    path = write(tmp_path / name, b"")
    with pytest.raises(InputError, match=message):
        read_all(path, fmt, **options)
    with pytest.raises(InputError, match=message):
        readers.reading(str(path), fmt, **options)


def test_a_csv_file_is_read_as_text_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", "one line, with a comma\n")
    assert texts(read_all(path, "txt")[0]) == ["one line, with a comma"]


@pytest.mark.parametrize(
    ("name", "options", "first", "second"),
    [
        ("a.jsonl", {"id_field": "id"}, '{"id": 1, "text": "one"}', '{"id": 2, "text": "two"}'),
        ("a.tsv", {"column": 2, "id_column": 1}, "1\tone", "2\ttwo"),
    ],
)
def test_a_bom_at_the_start_of_any_record_is_dropped(
    tmp_path: Path, name: str, options: dict, first: str, second: str
) -> None:
    """``cat a.jsonl b.jsonl``: the second file's BOM starts a line in the middle."""
    path = write(tmp_path / name, ("\ufeff" + first + "\n\ufeff" + second + "\n").encode())
    lines, stats = read_all(path, **options)
    assert [(line.text, line.ext_id) for line in lines] == [("one", "1"), ("two", "2")]
    assert stats["lines"] == 2 and sum(stats.values()) == 2  # nothing skipped
