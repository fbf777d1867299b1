"""Fuzz: hostile files through the whole ingest (read, dedup, store, encode, upsert).

Every example is ingested into one database (a tiny BERT model, SQLite, Qdrant Edge) and
must either succeed or raise :class:`bitextdb.InputError`, never anything else; after every
example ``check()`` must find SQL and the vector store in agreement (nothing half-written).
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import gzip
import json
import lzma
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import bitextdb
from bitextdb.readers import MAX_RECORD_BYTES, ReadStats, normalize, read_lines, text_hash

WORDS = ["the", "dog", "house", "tree", "der", "Hund", "das", "Haus", "el", "perro", "la"]
WORDS += ["casa", "café", "naïve", "東京", "Ελλάδα", "🙂"]
BOMS = [b"", b"", b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]
MAX_EXAMPLES = 1000


@dataclass
class Case:
    """One hostile file and the options it is ingested with."""

    fmt: str  # what the content is written as
    flag: str  # the --format given (auto, or a format that may not match)
    data: bytes
    compression: str | None
    options: dict[str, Any] = field(default_factory=dict)
    embeddings: str | None = None  # None, aligned, misaligned, nan
    split_sentences: bool = False
    lid: float | None = None

    @property
    def suffix(self) -> str:
        ext = {"txt": ".txt", "tsv": ".tsv", "jsonl": ".jsonl"}[self.fmt]
        return (
            ext
            + {None: "", "gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "broken": ".gz"}[
                self.compression
            ]
        )


def _text(draw: st.DrawFn) -> bytes:
    kinds = ["words", "words", "sentences", "unicode", "nul", "latin1", "long", "bytes"]
    kind = draw(st.sampled_from(kinds))
    if kind == "sentences":  # for the splitter: abbreviations, stops, line separators
        marks = st.sampled_from([". ", "! ", "? ", "... ", " e.g. ", " Dr. ", "\u2028", "\u3002"])
        parts = draw(st.lists(st.sampled_from(WORDS) | marks, min_size=1, max_size=16))
        return f"{''.join(parts)} {draw(st.integers(0, 10**6))}.".encode()
    if kind == "words":  # a number keeps the sentences of different examples apart
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12))
        return f"{' '.join(words)} {draw(st.integers(0, 10**6))}".encode()
    if kind == "unicode":
        return draw(st.text(max_size=60)).encode("utf-8")
    if kind == "nul":
        return draw(st.sampled_from(["a\x00b c", "\x00" * 3, "nul \x00 in the middle"])).encode()
    if kind == "latin1":  # latin-1 bytes inside UTF-8
        return b"ok " + draw(st.sampled_from(["café", "über", "naïve"])).encode("latin-1")
    if kind == "long":  # around the 1,000-character limit, or past the 1 MiB record limit
        size = draw(st.sampled_from([995, 1000, 1001, 1500, MAX_RECORD_BYTES + 3]))
        return (b"abcd " * (size // 5 + 1))[:size]
    return draw(st.binary(max_size=120))


def _record(draw: st.DrawFn, fmt: str) -> bytes:
    if fmt == "txt":
        return _text(draw)
    if fmt == "tsv":
        return b"\t".join(_text(draw) for _ in range(draw(st.integers(0, 3))))
    kind = draw(st.sampled_from(["obj", "obj", "nested", "id", "other", "broken", "surrogate"]))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8))
    sentence = f"{' '.join(words)} {draw(st.integers(0, 10**6))}"
    if kind == "obj":
        return json.dumps({"text": sentence}).encode()
    if kind == "nested":
        return json.dumps({"meta": {"text": sentence}, "text": 3}).encode()
    if kind == "id":
        ext = draw(st.one_of(st.integers(), st.text(max_size=20), st.none(), st.just([1])))
        return json.dumps({"text": sentence, "id": ext}).encode()
    if kind == "other":
        return draw(st.sampled_from([b"[1, 2]", b'"a string"', b"3", b"null", b"[" * 5000]))
    if kind == "broken":
        return json.dumps({"text": sentence}).encode()[: draw(st.integers(1, 10))]
    return b'{"text": "lone \\ud800 surrogate"}'


@st.composite
def hostile_files(draw: st.DrawFn) -> Case:
    fmt = draw(st.sampled_from(["txt", "tsv", "jsonl"]))
    records = [_record(draw, fmt) for _ in range(draw(st.integers(0, 10)))]
    if fmt == "tsv" and draw(st.booleans()):
        records.insert(0, b"text\tid")
    ends = [draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r", b"\n\n"])) for _ in records]
    body = b"".join(r + e for r, e in zip(records, ends))
    if draw(st.booleans()):
        body = body.rstrip(b"\r\n")  # no line break at the end
    data = draw(st.sampled_from(BOMS)) + body
    if draw(st.integers(0, 9)) == 0:  # or nothing but random bytes
        data = draw(st.binary(max_size=3000))
    case = Case(
        fmt=fmt,
        flag=draw(st.sampled_from(["auto", "auto", "auto", "txt", "tsv", "jsonl"])),
        data=data,
        compression=draw(st.sampled_from([None, None, None, None, "gzip", "bz2", "xz", "broken"])),
        embeddings=draw(st.sampled_from([None, None, None, "aligned", "misaligned", "nan"])),
        split_sentences=draw(st.integers(0, 3)) == 0,
        lid=draw(st.sampled_from([None, None, None, 0.5])),
    )
    used = case.fmt if case.flag == "auto" else case.flag
    if used == "tsv":
        case.options["column"] = draw(st.sampled_from([None, 1, 2, "text", "missing", 0]))
        case.options["id_column"] = draw(st.sampled_from([None, None, 2, "id"]))
    elif used == "jsonl":
        case.options["field"] = draw(st.sampled_from(["text", "text", "meta.text", "a..b"]))
        case.options["id_field"] = draw(st.sampled_from([None, None, "id"]))
    return case


def _compress(data: bytes, how: str | None) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "broken":  # a gzip stream cut short
        packed = gzip.compress(data)
        return packed[: max(10, len(packed) // 2)]
    return data


def _write_embeddings(case: Case, path: Path, dim: int) -> Path | None:
    if case.embeddings is None:
        return None
    stats = ReadStats()
    try:
        fmt = case.flag
        for _ in read_lines(path, fmt, stats=stats, **case.options):
            pass
        rows = stats.lines
    except bitextdb.InputError:
        rows = 1
    rows += case.embeddings == "misaligned"
    vectors = np.random.default_rng(rows).standard_normal((rows, dim)).astype(np.float32)
    if case.embeddings == "nan" and rows:
        vectors[rows // 2, 0] = np.nan
    out = path.with_name(path.name + ".npy")
    np.save(out, vectors)
    return out


def _plain_text_oracle(case: Case) -> set[str] | None:
    """The sentences a plain, uncompressed UTF-8 txt file must give (None: no simple oracle)."""
    if case.fmt != "txt" or case.flag not in ("auto", "txt") or case.compression:
        return None
    if case.split_sentences or case.lid is not None:
        return None
    out = set()
    for record in case.data.removeprefix(b"\xef\xbb\xbf").split(b"\n"):
        record = record.removesuffix(b"\r")
        if len(record) > MAX_RECORD_BYTES:
            continue
        try:
            sentence = normalize(record.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        if 2 <= len(sentence) <= 1000:
            out.add(sentence)
    return out


@pytest.mark.slow
def test_hostile_files_ingest_cleanly_or_fail_with_input_error(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("fuzz")
    db = bitextdb.init(work / "home", model=str(tiny_bert))
    outcomes: collections.Counter[str] = collections.Counter()
    seen: collections.Counter[str] = collections.Counter()  # what the inputs held

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=hostile_files())
    def ingest_one(case: Case) -> None:
        n = sum(outcomes.values())
        seen.update(_features(case))
        path = work / f"case{n}{case.suffix}"
        path.write_bytes(_compress(case.data, case.compression))
        embeddings = _write_embeddings(case, path, db.settings.dim)
        try:
            result = db.ingest(
                path,
                "en",
                fmt=case.flag,
                embeddings=embeddings,
                split_sentences=case.split_sentences,
                lid=case.lid,
                mine=False,
                **case.options,
            )
        except bitextdb.InputError:
            outcomes["InputError"] += 1
        else:
            outcomes["ingested"] += 1
            (report,) = result["ingested"]
            stored = report["new"] + report["duplicates"]
            if case.split_sentences:  # skips then count records or sentences
                assert stored <= report["sentences"], report
            else:
                assert report["read"] == sum(report["skipped"].values()) + stored, report
            expected = _plain_text_oracle(case)
            if expected is not None:
                assert expected <= _stored_texts(db), "a valid line was not stored"
        finally:
            path.unlink()
            if embeddings is not None:
                embeddings.unlink()
        report = db.check()
        assert report.ok, report.as_dict()

    try:
        ingest_one()
        with db.db.session() as s:
            rows = s.execute(text("SELECT text, text_hash, indexed FROM sentences")).all()
    finally:
        db.close()
    for sentence, digest, indexed in rows:
        assert indexed and digest == text_hash(sentence)
        assert sentence == normalize(sentence) and 2 <= len(sentence) <= 1000
        assert "\x00" not in sentence
    total = sum(outcomes.values())
    assert total >= MAX_EXAMPLES // 2 and outcomes["ingested"] and outcomes["InputError"]
    print(
        f"\n[fuzz] {total} hostile inputs fuzzed through ingest ({dict(outcomes)}); "
        f"{len(rows)} distinct sentences stored; check() ok after every one; "
        f"inputs held: {dict(sorted(seen.items()))}"
    )


def _features(case: Case) -> list[str]:
    data = case.data
    found = [case.fmt, f"compression={case.compression}", f"embeddings={case.embeddings}"]
    found += ["split"] if case.split_sentences else []
    found += ["lid"] if case.lid is not None else []
    checks = {
        "NUL": b"\x00" in data,
        "CRLF": b"\r\n" in data,
        "lone CR": b"\r" in data.replace(b"\r\n", b""),
        "BOM": data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")),
        "invalid UTF-8": not _is_utf8(data),
        "line > 1,000 chars": any(len(line) > 1000 for line in data.split(b"\n")),
        "line > 1 MiB": any(len(line) > MAX_RECORD_BYTES for line in data.split(b"\n")),
        "format mismatch": case.flag not in ("auto", case.fmt),
    }
    return found + [name for name, hit in checks.items() if hit]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _stored_texts(db: bitextdb.BitextDB) -> set[str]:
    with db.db.session() as s:
        return set(s.execute(text("SELECT text FROM sentences")).scalars())


# -- values PostgreSQL would refuse: InputError (or skipped as malformed) on every database --


@pytest.mark.postgres
@pytest.mark.parametrize(
    "case",
    ["long-tsv-id", "nul-tsv-id", "nul-jsonl-id", "long-lang", "long-source"],
)
def test_values_postgres_refuses_are_input_errors(
    case: str, postgres_url: str, tmp_path: Path
) -> None:
    db = bitextdb.init(tmp_path / "home", db=postgres_url, model="synthetic", dim=4)
    try:
        one = tmp_path / "one.npy"
        np.save(one, np.ones((1, 4), dtype=np.float32))
        lang, source, options = "en", None, {}
        if case == "long-tsv-id":
            path, options = tmp_path / "c.tsv", {"id_column": 2}
            path.write_text("a sentence\t" + "x" * 300 + "\n")
        elif case == "nul-tsv-id":
            path, options = tmp_path / "c.tsv", {"id_column": 2}
            path.write_text("a sentence\tx\x00y\n")
        elif case == "nul-jsonl-id":
            path, options = tmp_path / "c.jsonl", {"id_field": "id"}
            path.write_text('{"text": "a sentence", "id": "x\\u0000y"}\n')
        else:
            path = tmp_path / "c.txt"
            path.write_text("a sentence\n")
            if case == "long-lang":
                lang = "en-abcdefgh-abcdefgh"
            else:
                source = "s" * 600
        # refusing it in one clear sentence is fine; so is storing it
        with contextlib.suppress(bitextdb.InputError, bitextdb.ConfigError):
            db.ingest(path, lang, source=source, embeddings=one, **options)
        assert db.check().ok
    finally:
        db.close()
