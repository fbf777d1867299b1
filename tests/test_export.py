"""Exports: formats, compression, direction, filters, cursors, margins and retrieval modes."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

import bitextdb
import bitextdb.export as export_module
from bitextdb.cli import cli
from bitextdb.cursors import list_cursors
from bitextdb.db import Database
from bitextdb.db import export_sql as export_sql_module
from bitextdb.errors import InputError
from bitextdb.export import export_pairs, iter_records, iter_withdrawn, select_pairs
from tests.reference import cosine_matrix, random_unit
from tests.schema_helpers import database_at

INF = float("-inf")
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
OPENERS = {"": open, ".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
MAGIC = {".gz": b"\x1f\x8b", ".bz2": b"BZh", ".xz": b"\xfd7zXZ\x00"}


XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


# -- helpers -----------------------------------------------------------------------------------
def build(
    home: Path, db_url: str | None = None, n: tuple[int, int] = (14, 17)
) -> bitextdb.BitextDB:
    """de and en sentences with random vectors, mined (stored as de-en: de is the src)."""
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=3)
    db.ingest_embeddings("en", [f"en sentence {i}" for i in range(n[0])], random_unit(n[0], 8, 1))
    db.ingest_embeddings("de", [f"de satz {i}" for i in range(n[1])], random_unit(n[1], 8, 2))
    return db


def table(db: bitextdb.BitextDB) -> list[dict]:
    """Every pairs row with both texts (stored orientation: src is de)."""
    with db.db.session() as s:
        rows = s.execute(
            text(
                "SELECT p.src_id, p.tgt_id, p.margin, p.cosine, p.accepted, p.updated_at, "
                "a.text, b.text FROM pairs p JOIN sentences a ON a.id = p.src_id "
                "JOIN sentences b ON b.id = p.tgt_id WHERE p.src_lang = 'de' AND p.tgt_lang = 'en'"
            )
        ).all()
    keys = ("src_id", "tgt_id", "margin", "cosine", "accepted", "updated_at", "src", "tgt")
    return [dict(zip(keys, row)) for row in rows]


def accepted(db: bitextdb.BitextDB, min_score: float = INF) -> list[dict]:
    """Accepted pairs in the stored orientation, best first, ties by (src, tgt)."""
    rows = [r for r in table(db) if r["accepted"] and r["margin"] >= min_score]
    return sorted(rows, key=lambda r: (-r["margin"], r["src_id"], r["tgt_id"]))


def read_text(path: Path) -> str:
    opener = OPENERS[path.suffix if path.suffix in OPENERS else ""]
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return f.read()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in read_text(path).splitlines()]


def tmx_units(document: str) -> list[dict[str, str]]:
    """A TMX document's units, each ``{lang: segment text, prop type: value}``; checks the
    header names the source language."""
    root = ElementTree.fromstring(document)
    assert root.tag == "tmx" and root.get("version") == "1.4"
    header = root.find("header")
    assert header is not None and header.get("creationtool") == "bitextdb"
    units = []
    for tu in root.iter("tu"):
        unit = {prop.get("type", ""): prop.text or "" for prop in tu.findall("prop")}
        for tuv in tu.findall("tuv"):
            unit[tuv.get(XML_LANG, "")] = tuv.findtext("seg") or ""
        units.append(unit)
    return units


def as_utc(moment: datetime | str) -> datetime:
    """A stored timestamp as aware UTC (raw SQLite rows hold naive UTC text)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


# -- formats and compression ------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["", ".gz", ".bz2", ".xz"])
@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "moses", "tmx"])
def test_round_trip_every_format_and_compression(
    home: Path, tmp_path: Path, fmt: str, compression: str
) -> None:
    db = build(home)
    try:
        out = tmp_path / f"corpus{'' if fmt == 'moses' else '.' + fmt}{compression}"
        summary = export_pairs(db, "de-en", output=str(out), fmt=fmt, min_score=INF)
        want = accepted(db)
    finally:
        db.close()
    assert summary["rows"] == len(want) > 5
    if fmt == "moses":
        files = [tmp_path / f"corpus.de{compression}", tmp_path / f"corpus.en{compression}"]
        assert summary["files"] == [str(f) for f in files]
        src, tgt = (read_text(f).splitlines() for f in files)
        assert len(src) == len(tgt) == len(want)
        assert list(zip(src, tgt)) == [(r["src"], r["tgt"]) for r in want]
    else:
        files = [out]
        assert summary["files"] == [str(out)]
        if fmt == "tsv":
            rows = [line.split("\t") for line in read_text(out).splitlines()]
            assert [(s, t) for _, s, t in rows] == [(r["src"], r["tgt"]) for r in want]
            scores = [float(score) for score, _, _ in rows]
            assert scores == pytest.approx([r["margin"] for r in want], abs=1e-6)
            assert scores == sorted(scores, reverse=True)
        elif fmt == "tmx":
            units = tmx_units(read_text(out))
            assert [(u["de"], u["en"]) for u in units] == [(r["src"], r["tgt"]) for r in want]
            assert [float(u["x-margin"]) for u in units] == pytest.approx(
                [r["margin"] for r in want], abs=1e-6
            )
            assert [float(u["x-cosine"]) for u in units] == pytest.approx(
                [r["cosine"] for r in want], abs=1e-6
            )
        else:
            records = jsonl(out)
            assert [list(r) for r in records[:1]] == [
                ["src", "tgt", "src_lang", "tgt_lang", "margin", "cosine", "src_id", "tgt_id"]
            ]
            assert [
                (r["src"], r["tgt"], r["src_id"], r["tgt_id"], r["margin"], r["cosine"])
                for r in records
            ] == [
                (w["src"], w["tgt"], w["src_id"], w["tgt_id"], w["margin"], w["cosine"])
                for w in want
            ]
            assert {(r["src_lang"], r["tgt_lang"]) for r in records} == {("de", "en")}
    for f in files:
        head = f.read_bytes()[:6]
        if compression:
            assert head.startswith(MAGIC[compression]), f
        else:
            assert not any(head.startswith(m) for m in MAGIC.values())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_to_stdout(home: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    db = build(home)
    try:
        summary = export_pairs(db, "de-en", min_score=INF)
        want = accepted(db)
    finally:
        db.close()
    lines = capsysbinary.readouterr().out.decode("utf-8").splitlines()
    assert summary["files"] == ["-"] and summary["rows"] == len(want)
    assert [line.split("\t")[1:] for line in lines] == [[r["src"], r["tgt"]] for r in want]


# -- on SQLite and PostgreSQL ------------------------------------------------------------------
def test_direction_swap_min_score_and_order(db_url: str, home: Path, tmp_path: Path) -> None:
    db = build(home, db_url)
    try:
        want = accepted(db)
        out = tmp_path / "en-de.jsonl"
        export_pairs(db, "en-de", output=str(out), fmt="jsonl", min_score=INF)
        records = jsonl(out)
        assert {(r["src_lang"], r["tgt_lang"]) for r in records} == {("en", "de")}
        # en is stored as the tgt side: every pair comes back swapped
        assert [(r["src_id"], r["tgt_id"], r["src"], r["tgt"]) for r in records] == [
            (w["tgt_id"], w["src_id"], w["tgt"], w["src"])
            for w in sorted(want, key=lambda w: (-w["margin"], w["tgt_id"], w["src_id"]))
        ]
        margins = [r["margin"] for r in records]
        assert margins == sorted(margins, reverse=True)

        cut = float(np.median(margins))
        export_pairs(db, "en-de", output=str(out), fmt="jsonl", min_score=cut)
        kept = jsonl(out)
        assert 0 < len(kept) < len(records)
        assert {(r["src_id"], r["tgt_id"]) for r in kept} == {
            (w["tgt_id"], w["src_id"]) for w in accepted(db, cut)
        }
        # without --min-score: the database threshold
        db.configure(threshold=cut)
        assert export_pairs(db, "en-de", output=str(out))["rows"] == len(kept)
    finally:
        db.close()


def test_ratio_max_selection_equals_the_accepted_pairs(db_url: str, home: Path) -> None:
    db = build(home, db_url, n=(25, 22))
    try:
        want = accepted(db)
        for pair, flip in (("de-en", False), ("en-de", True)):
            sel = select_pairs(db, pair, margin="ratio", retrieval="max")
            got = list(zip(sel.src.tolist(), sel.tgt.tolist()))
            if flip:
                got = [(b, a) for a, b in got]
            assert set(got) == {(w["src_id"], w["tgt_id"]) for w in want}
            by_pair = {(w["src_id"], w["tgt_id"]): w for w in want}
            assert sel.score.tolist() == pytest.approx([by_pair[p]["margin"] for p in got])
            assert sel.cosine.tolist() == pytest.approx([by_pair[p]["cosine"] for p in got])
    finally:
        db.close()


def test_cursor_exports_only_new_pairs(db_url: str, home: Path, tmp_path: Path) -> None:
    """New sentences in orthogonal dimensions leave the old lists alone: only new pairs."""
    rng = np.random.default_rng(5)
    dim = 16

    def cluster(n: int, dims: slice) -> tuple[np.ndarray, np.ndarray]:
        a = np.zeros((n, dim))
        a[:, dims] = np.abs(rng.standard_normal((n, 8)))
        b = a.copy()
        b[:, dims] += 0.05 * np.abs(rng.standard_normal((n, 8)))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        return a.astype(np.float32), b.astype(np.float32)

    old_de, old_en = cluster(12, slice(0, 8))
    new_de, new_en = cluster(5, slice(8, 16))
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=dim, k=3)
    out = tmp_path / "delta.jsonl"
    try:
        db.ingest_embeddings("de", [f"de old {i}" for i in range(12)], old_de)
        db.ingest_embeddings("en", [f"en old {i}" for i in range(12)], old_en)
        first = export_pairs(db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="c")
        first_rows = {(r["src"], r["tgt"]) for r in jsonl(out)}
        assert first["rows"] == 12 and first["cursor_after"] is None
        assert first_rows == {(f"de old {i}", f"en old {i}") for i in range(12)}
        before = {(r["src_id"], r["tgt_id"]): r["updated_at"] for r in table(db)}

        db.ingest_embeddings("de", [f"de new {i}" for i in range(5)], new_de)
        db.ingest_embeddings("en", [f"en new {i}" for i in range(5)], new_en)
        assert {(r["src_id"], r["tgt_id"]): r["updated_at"] for r in table(db)} | before == {
            (r["src_id"], r["tgt_id"]): r["updated_at"] for r in table(db)
        }  # the old rows did not change
        second = export_pairs(db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="c")
        assert {(r["src"], r["tgt"]) for r in jsonl(out)} == {
            (f"de new {i}", f"en new {i}") for i in range(5)
        }
        assert second["rows"] == 5
        third = export_pairs(db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="c")
        assert third["rows"] == 0 and read_text(out) == ""
        # another name starts from the beginning; a name is bound to its pair
        assert export_pairs(db, "en-de", output=str(out), min_score=INF, cursor="d")["rows"] == 17
        with pytest.raises(bitextdb.InputError, match="follows"):
            db.ingest_embeddings("fr", ["fr un"], random_unit(1, dim, 3))
            export_pairs(db, "de-fr", output=str(out), cursor="c")
    finally:
        db.close()


def test_cursor_replays_to_the_current_selection(db_url: str, home: Path, tmp_path: Path) -> None:
    """Applying the cursor exports in order gives every accepted pair with its margin."""
    db = build(home, db_url, n=(10, 10))
    out = tmp_path / "delta.jsonl"
    seen: dict[tuple[int, int], float] = {}
    try:
        starts = []
        for step in range(3):
            summary = export_pairs(
                db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="sync"
            )
            starts.append(datetime.fromisoformat(summary["started_at"]))
            for r in jsonl(out):
                seen[(r["src_id"], r["tgt_id"])] = r["margin"]
            if step == 1:  # what the second export wrote: exactly the rows changed since the first
                changed = {
                    (w["src_id"], w["tgt_id"])
                    for w in accepted(db)
                    if as_utc(w["updated_at"]) > starts[0]
                }
                assert {(r["src_id"], r["tgt_id"]) for r in jsonl(out)} == changed
                assert changed
            lo = 10 + 7 * step
            db.ingest_embeddings(
                "en", [f"en sentence {i}" for i in range(lo, lo + 7)], random_unit(7, 8, 10 + step)
            )
        final = export_pairs(
            db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="sync"
        )
        for r in jsonl(out):
            seen[(r["src_id"], r["tgt_id"])] = r["margin"]
        current = {(w["src_id"], w["tgt_id"]): w["margin"] for w in accepted(db)}
        assert {key: seen[key] for key in current} == current
        assert final["rows"] < len(current)
        again = export_pairs(db, "de-en", output=str(out), min_score=INF, cursor="sync")
        assert again["rows"] == 0
    finally:
        db.close()


def test_cursor_keeps_changes_made_during_an_export(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor moves to the export's start: a pair changed meanwhile comes next time."""
    db = build(home)
    out = tmp_path / "c.jsonl"
    real = export_sql_module.texts
    target = accepted(db)[-1]

    def texts_and_a_concurrent_change(s, ids):  # type: ignore[no-untyped-def]
        with db.db.engine.begin() as conn:  # another writer, committed during the export
            conn.execute(
                text("UPDATE pairs SET updated_at = :now WHERE src_id = :a AND tgt_id = :b"),
                {"now": datetime.now(timezone.utc), "a": target["src_id"], "b": target["tgt_id"]},
            )
        return real(s, ids)

    try:
        monkeypatch.setattr(export_sql_module, "texts", texts_and_a_concurrent_change)
        export_pairs(db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="c")
        monkeypatch.undo()
        export_pairs(db, "de-en", output=str(out), fmt="jsonl", min_score=INF, cursor="c")
        assert [(r["src_id"], r["tgt_id"]) for r in jsonl(out)] == [
            (target["src_id"], target["tgt_id"])
        ]
    finally:
        db.close()


def test_cursor_export_holds_the_miners_lock(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor export takes the very lock the miner of that pair takes (PostgreSQL)."""
    db = build(home, n=(5, 5))
    taken: list[str] = []
    real = Database.advisory_lock

    def recording(self, name):  # type: ignore[no-untyped-def]
        taken.append(name)
        return real(self, name)

    monkeypatch.setattr(Database, "advisory_lock", recording)
    try:
        db.ingest_embeddings("en", ["one more"], random_unit(1, 8, 4))
        mined = set(taken)
        taken.clear()
        export_pairs(db, "en-de", output=str(tmp_path / "x.tsv"))
        assert taken == []  # no cursor: nothing to protect
        export_pairs(db, "en-de", output=str(tmp_path / "x.tsv"), cursor="c")
        assert mined and set(taken) == mined
    finally:
        db.close()


def test_since(db_url: str, home: Path, tmp_path: Path) -> None:
    db = build(home, db_url, n=(10, 10))
    out = tmp_path / "since.jsonl"
    try:
        time.sleep(0.01)
        middle = datetime.now(timezone.utc)
        db.ingest_embeddings("en", [f"en extra {i}" for i in range(6)], random_unit(6, 8, 9))
        want = {
            (w["src_id"], w["tgt_id"]) for w in accepted(db) if as_utc(w["updated_at"]) >= middle
        }
        assert want and len(want) < len(accepted(db))
        for since in (middle, middle.replace(tzinfo=None)):  # naive is UTC
            export_pairs(db, "de-en", output=str(out), fmt="jsonl", min_score=INF, since=since)
            assert {(r["src_id"], r["tgt_id"]) for r in jsonl(out)} == want
        later = datetime.now(timezone.utc)
        assert export_pairs(db, "de-en", output=str(out), min_score=INF, since=later)["rows"] == 0
    finally:
        db.close()


def test_with_sources(db_url: str, home: Path, tmp_path: Path) -> None:
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=2)
    en, de = random_unit(4, 8, 1), random_unit(4, 8, 2)
    try:
        db.ingest_embeddings("en", [f"en {i}" for i in range(4)], en, source="europarl")
        db.ingest_embeddings("en", ["en 0", "en 1"], en[:2], source="books")
        db.ingest_embeddings("de", [f"de {i}" for i in range(4)], de, source="wiki")
        out = tmp_path / "s.jsonl"
        export_pairs(db, "en-de", output=str(out), fmt="jsonl", min_score=INF, with_sources=True)
        records = jsonl(out)
        assert len(records) == 4
        for r in records:
            assert r["src_sources"] == (
                ["books", "europarl"] if r["src"] in ("en 0", "en 1") else ["europarl"]
            )
            assert r["tgt_sources"] == ["wiki"]
        export_pairs(db, "en-de", output=str(out), fmt="jsonl", min_score=INF)
        assert all("src_sources" not in r for r in jsonl(out))
    finally:
        db.close()


def test_with_ids(db_url: str, home: Path, tmp_path: Path) -> None:
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=2)
    en, de = random_unit(4, 8, 1), random_unit(4, 8, 2)

    def tsv(name: str, rows: list[tuple[str, str]], vectors: np.ndarray) -> tuple[str, str]:
        path, npy = tmp_path / f"{name}.tsv", tmp_path / f"{name}.npy"
        path.write_text("".join(f"{i}\t{t}\n" for i, t in rows), encoding="utf-8")
        np.save(npy, vectors)
        return str(path), str(npy)

    try:
        path, npy = tsv("en", [(f"e{i}", f"en {i}") for i in range(4)], en)
        db.ingest(path, "en", column=2, id_column=1, embeddings=npy)
        path, npy = tsv("more", [("x9", "en 0")], en[:1])  # met again, under another id
        db.ingest(path, "en", column=2, id_column=1, embeddings=npy)
        db.ingest_embeddings("de", [f"de {i}" for i in range(4)], de)  # no ids
        out = tmp_path / "p.jsonl"
        export_pairs(
            db,
            "en-de",
            output=str(out),
            fmt="jsonl",
            min_score=INF,
            with_ids=True,
            with_sources=True,
        )
        records = jsonl(out)
        assert len(records) == 4
        assert list(records[0])[-4:] == ["src_sources", "tgt_sources", "src_ext_ids", "tgt_ext_ids"]
        assert {r["src"]: r["src_ext_ids"] for r in records} == {
            "en 0": ["e0", "x9"],
            "en 1": ["e1"],
            "en 2": ["e2"],
            "en 3": ["e3"],
        }
        assert all(r["tgt_ext_ids"] == [] for r in records)
        assert list(iter_records(db, "en-de", min_score=INF, with_ids=True, with_sources=True)) == (
            records
        )
    finally:
        db.close()
    result = CliRunner().invoke(
        cli,
        [
            *("-q", "--db", db_url, "export", "--pair", "de-en", "--format", "jsonl"),
            *("--min-score", "-100", "--with-ids"),
        ],
    )
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(x for r in got for x in r["tgt_ext_ids"]) == ["e0", "e1", "e2", "e3", "x9"]
    assert "src_sources" not in got[0]


# -- margins and retrieval modes against a plain reference --------------------------------------
def reference(db: bitextdb.BitextDB, src_lang: str, tgt_lang: str, margin: str, retrieval: str):  # type: ignore[no-untyped-def]
    """LASER's selection in plain loops over the full cosine matrix of the stored vectors."""
    k = db.settings.k
    ids, vecs = {}, {}
    for lang in (src_lang, tgt_lang):
        with db.db.session() as s:
            wanted = [
                r[0]
                for r in s.execute(
                    text("SELECT id FROM sentences WHERE lang = :l ORDER BY id"), {"l": lang}
                )
            ]
        ids[lang], vecs[lang] = db.index.retrieve(lang, np.array(wanted))
    cos = cosine_matrix(vecs[src_lang], vecs[tgt_lang])
    s_ids, t_ids = ids[src_lang].tolist(), ids[tgt_lang].tolist()

    def knn(row: np.ndarray, others: list[int]) -> list[tuple[int, float]]:
        order = sorted(range(len(others)), key=lambda j: (-row[j], others[j]))[:k]
        return [(others[j], float(row[j])) for j in order]

    fwd_lists = {x: knn(cos[i], t_ids) for i, x in enumerate(s_ids)}
    bwd_lists = {y: knn(cos[:, j], s_ids) for j, y in enumerate(t_ids)}
    r_src = {x: sum(c for _, c in lst) / len(lst) for x, lst in fwd_lists.items()}
    r_tgt = {y: sum(c for _, c in lst) / len(lst) for y, lst in bwd_lists.items()}

    def score(c: float, rx: float, ry: float) -> float:
        if margin == "ratio":
            return c / max((rx + ry) / 2, 1e-6)
        if margin == "distance":
            return c - (rx + ry) / 2
        return c

    def best(
        lst: list[tuple[int, float]], r_self: float, r_other: dict
    ) -> tuple[int, float, float]:
        top = None
        for y, c in lst:
            m = score(c, r_self, r_other[y])
            if top is None or m > top[1]:
                top = (y, m, c)
        assert top is not None
        return top

    fwd = {x: best(lst, r_src[x], r_tgt) for x, lst in fwd_lists.items()}
    bwd = {y: best(lst, r_tgt[y], r_src) for y, lst in bwd_lists.items()}
    pairs: dict[tuple[int, int], tuple[float, float]] = {}
    if retrieval in ("fwd", "max"):
        for x, (y, m, c) in fwd.items():
            pairs[(x, y)] = (m, c)
    if retrieval in ("bwd", "max"):
        for y, (x, m, c) in bwd.items():
            pairs[(x, y)] = (m, c)
    if retrieval == "intersect":
        for x, (y, m, c) in fwd.items():
            if bwd[y][0] == x:
                pairs[(x, y)] = (m, c)
    ordered = sorted(pairs.items(), key=lambda kv: (-kv[1][0], kv[0][0], kv[0][1]))
    if retrieval == "max":
        used_x, used_y, kept = set(), set(), []
        for (x, y), v in ordered:
            if x not in used_x and y not in used_y:
                used_x.add(x)
                used_y.add(y)
                kept.append(((x, y), v))
        ordered = kept
    return ordered


@pytest.mark.parametrize("margin", ["ratio", "distance", "absolute"])
def test_margins_and_retrievals_agree_with_reference(
    home: Path, tmp_path: Path, margin: str
) -> None:
    db = build(home, n=(16, 19))
    out = tmp_path / "m.jsonl"
    try:
        for retrieval in ("max", "intersect", "fwd", "bwd"):
            for src, tgt in (("en", "de"), ("de", "en")):
                want = reference(db, src, tgt, margin, retrieval)
                summary = export_pairs(
                    db,
                    f"{src}-{tgt}",
                    output=str(out),
                    fmt="jsonl",
                    min_score=INF,
                    margin=margin,
                    retrieval=retrieval,
                )
                records = jsonl(out)
                assert summary["rows"] == len(want), (retrieval, src)
                assert [(r["src_id"], r["tgt_id"]) for r in records] == [p for p, _ in want]
                assert [r["margin"] for r in records] == pytest.approx([v[0] for _, v in want])
                assert [r["cosine"] for r in records] == pytest.approx([v[1] for _, v in want])
                assert {r["src_lang"] for r in records} == {src}
        # fwd has one row per src sentence, bwd one per tgt sentence
        for retrieval, n in (("fwd", 16), ("bwd", 19)):
            summary = export_pairs(
                db, "en-de", output=str(out), margin=margin, retrieval=retrieval, min_score=INF
            )
            assert summary["rows"] == n
        # min_score cuts the tail; by default the threshold for ratio, no limit otherwise
        scores = sorted(v[0] for _, v in reference(db, "en", "de", margin, "bwd"))
        cut = (scores[9] + scores[10]) / 2  # between two scores: float noise cannot matter
        summary = export_pairs(
            db, "en-de", output=str(out), fmt="jsonl", margin=margin, retrieval="bwd", min_score=cut
        )
        assert summary["rows"] == sum(m >= cut for m in scores) < 19
        assert all(r["margin"] >= cut for r in jsonl(out))
        default = export_pairs(db, "en-de", output=str(out), margin=margin, retrieval="bwd")
        assert default["min_score"] == (1.0 if margin == "ratio" else None)
        if margin != "ratio":
            assert default["rows"] == 19
    finally:
        db.close()


# -- streaming and failures -------------------------------------------------------------------
def test_text_lookups_are_batched(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = build(home, n=(20, 20))
    calls: list[int] = []
    real = export_sql_module.texts

    def counting(s, ids):  # type: ignore[no-untyped-def]
        ids = list(ids)
        calls.append(len(ids))
        return real(s, ids)

    monkeypatch.setattr(export_sql_module, "texts", counting)
    monkeypatch.setattr(export_module, "BATCH", 3)
    try:
        for retrieval in ("max", "fwd"):
            calls.clear()
            summary = export_pairs(
                db, "de-en", output=str(tmp_path / "b.tsv"), min_score=INF, retrieval=retrieval
            )
            assert summary["rows"] > 6
            assert len(calls) == -(-summary["rows"] // 3) and max(calls) <= 6
            assert len(read_text(tmp_path / "b.tsv").splitlines()) == summary["rows"]
    finally:
        db.close()


def test_failed_export_leaves_no_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = build(home)
    target = tmp_path / "out.tsv.gz"
    target.write_bytes(b"previous export")

    def broken(s, ids):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    try:
        monkeypatch.setattr(export_sql_module, "texts", broken)
        with pytest.raises(RuntimeError):
            export_pairs(db, "de-en", output=str(target), min_score=INF, cursor="c")
        with pytest.raises(RuntimeError):
            export_pairs(db, "de-en", output=str(tmp_path / "m"), fmt="moses", min_score=INF)
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out.tsv.gz"]
        assert target.read_bytes() == b"previous export"
        # the failed export did not move the cursor
        assert export_pairs(db, "de-en", output=str(target), min_score=INF, cursor="c")["rows"] > 0
    finally:
        db.close()


@pytest.mark.parametrize("fmt", ["tsv", "parquet"])
def test_links_and_pipes_are_written_through(home: Path, tmp_path: Path, fmt: str) -> None:
    """A link stays a link and its target gets the export; a named pipe (like /dev/null,
    not a regular file) is written straight, never replaced by a file."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    db = build(home)
    try:
        target = tmp_path / f"target.{fmt}"
        target.write_bytes(b"old")
        link = tmp_path / f"link.{fmt}"
        link.symlink_to(target)
        export_pairs(db, "de-en", output=str(link), fmt=fmt, min_score=INF)
        assert link.is_symlink() and target.read_bytes() != b"old"
        reference = tmp_path / f"reference.{fmt}"
        export_pairs(db, "de-en", output=str(reference), fmt=fmt, min_score=INF)
        assert target.read_bytes() == reference.read_bytes()

        pipe = tmp_path / f"pipe.{fmt}"
        os.mkfifo(pipe)
        received: list[bytes] = []
        # a daemon: were the pipe replaced, nothing would ever open it to write
        reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
        reader.start()
        export_pairs(db, "de-en", output=str(pipe), fmt=fmt, min_score=INF)
        reader.join(30)
        assert stat.S_ISFIFO(os.lstat(pipe).st_mode)  # still the pipe
        assert received == [reference.read_bytes()]
    finally:
        db.close()


def test_the_database_files_are_never_an_output(home: Path, tmp_path: Path) -> None:
    db = build(home)
    try:
        stored = [p for p in home.rglob("*") if p.is_file()]
        sqlite_file = home / "bitextdb.sqlite"
        assert sqlite_file in stored and any("vectors" in p.parts for p in stored)
        # SQLite's shared-memory index and log change as it is read: not compared
        kept = [p for p in stored if not p.name.endswith(("-shm", "-wal"))]
        before = {p: p.read_bytes() for p in kept}
        gold = tmp_path / "gold.tsv"
        gold.write_text("de satz 0\ten sentence 0\n", encoding="utf-8")
        link = tmp_path / "innocent.tsv"
        link.symlink_to(sqlite_file)
        for target in [*stored, link, home / "vectors" / "new.tsv"]:
            with pytest.raises(bitextdb.InputError, match="a file of the database itself"):
                export_pairs(db, "de-en", output=str(target), min_score=INF)
            with pytest.raises(bitextdb.InputError, match="a file of the database itself"):
                export_pairs(
                    db, "de-en", output=str(tmp_path / "p"), withdrawn=str(target), since=EPOCH
                )
        for target in (sqlite_file, link):
            with pytest.raises(bitextdb.InputError, match="a file of the database itself"):
                db.evaluate("de-en", gold, plot=str(target))
        assert {p: p.read_bytes() for p in kept} == before
        assert all(p.is_file() for p in stored) and db.check().ok
    finally:
        db.close()


def test_errors(home: Path, tmp_path: Path) -> None:
    db = build(home)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    try:
        cases = [
            ({"pair": "en-fr"}, "no sentences in 'fr'"),
            ({"pair": "en"}, "not a language pair"),
            ({"pair": "en-en"}, "itself"),
            ({"pair": "en-de", "fmt": "csv"}, "Unknown format"),
            ({"pair": "en-de", "margin": "cosine"}, "Unknown margin"),
            ({"pair": "en-de", "retrieval": "both"}, "Unknown retrieval"),
            ({"pair": "en-de", "fmt": "moses"}, "Moses output"),
            ({"pair": "en-de", "output": str(tmp_path / "no" / "x.tsv")}, "does not exist"),
            ({"pair": "en-de", "cursor": "c", "margin": "distance"}, "--cursor"),
            ({"pair": "en-de", "cursor": ""}, "cursor name"),
            ({"pair": "en-de", "cursor": "c", "since": EPOCH}, "cannot go with --since"),
            ({"pair": "en-de", "min_score": float("nan")}, "not NaN"),
            ({"pair": "en-de", "with_sources": True}, "tsv has no place"),
            ({"pair": "en-de", "with_ids": True, "fmt": "tmx"}, "tmx has no place"),
            ({"pair": "en-de", "output": str(tmp_path / "p.tsv"), "fmt": "jsonl"}, "names a tsv"),
            ({"pair": "en-de", "output": str(tmp_path / "p.tmx.gz"), "fmt": "tsv"}, "names a tmx"),
            # a prefix (p.jsonl.de, p.jsonl.en were written)
            ({"pair": "en-de", "output": str(tmp_path / "p.jsonl"), "fmt": "moses"}, "a prefix"),
            ({"pair": "en-de", "output": str(tmp_path / "p.jsonl.zst")}, "not .zst"),
            (
                {"pair": "en-de", "output": str(tmp_path / "p.json")},
                r"writes JSON Lines \(.jsonl\)",
            ),
            ({"pair": "en-de", "output": str(tmp_path / "p.csv.gz")}, r"writes TSV \(.tsv\)"),
            (
                {"pair": "en-de", "since": EPOCH, "withdrawn": str(tmp_path / "w.json")}
                | {"output": str(tmp_path / "p.tsv")},
                r"w.json names a format export does not write",
            ),
            ({"pair": "en-de", "output": str(tmp_path / "loop")}, "Cannot resolve .*loop"),
            (
                {"pair": "en-de", "output": str(tmp_path / "p.jsonl"), "since": EPOCH}
                | {"withdrawn": str(tmp_path / "w.tsv")},
                "p.jsonl and .*w.tsv name two formats",
            ),
        ]
        for kwargs, message in cases:
            pair = kwargs.pop("pair")
            with pytest.raises(bitextdb.InputError, match=message):
                export_pairs(db, pair, **kwargs)  # type: ignore[arg-type]
        db.configure(pairs=["de-fr"])
        with pytest.raises(bitextdb.InputError, match="not mined"):
            export_pairs(db, "en-de")
    finally:
        db.close()


def test_an_export_notes_sentences_not_mined_yet(home: Path, tmp_path: Path) -> None:
    db = build(home)
    try:
        assert export_pairs(db, "de-en", output=str(tmp_path / "a.tsv"))["sentences_pending"] == 0
        db.ingest_embeddings("en", ["one more", "and another"], random_unit(2, 8, 9), mine=False)
        assert export_pairs(db, "de-en", output=str(tmp_path / "b.tsv"))["sentences_pending"] == 2
    finally:
        db.close()
    result = CliRunner().invoke(cli, ["export", "--pair", "en-de", "-o", str(tmp_path / "c.tsv")])
    assert "note: 2 sentences of the pair are not mined yet" in result.stdout


def test_the_outputs_name_chooses_the_format(home: Path, tmp_path: Path) -> None:
    db = build(home)
    try:
        want = [(w["src"], w["tgt"]) for w in accepted(db, INF)]
        for name in ("p.jsonl", "p.ndjson.gz", "p.JSONL"):
            summary = export_pairs(db, "de-en", output=str(tmp_path / name), min_score=INF)
            assert summary["format"] == "jsonl"
            assert [(r["src"], r["tgt"]) for r in jsonl(tmp_path / name)] == want
        export_pairs(db, "de-en", output=str(tmp_path / "p.tmx"), min_score=INF)
        units = tmx_units(read_text(tmp_path / "p.tmx"))
        assert [(u["de"], u["en"]) for u in units] == want
        for name in ("p.txt", "p", "p.tsv.xz"):  # no format named: TSV
            assert export_pairs(db, "de-en", output=str(tmp_path / name))["format"] == "tsv"
        # standard output with a withdrawal file: the file's name chooses
        w = str(tmp_path / "w.jsonl")
        assert export_pairs(db, "de-en", since=EPOCH, withdrawn=w)["format"] == "jsonl"
    finally:
        db.close()


# -- command line -------------------------------------------------------------------------------
def test_cli_export(home: Path, tmp_path: Path) -> None:
    db = build(home)
    want = accepted(db)
    at_threshold = len(accepted(db, db.settings.threshold))
    db.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "export", "--pair", "de-en", "--min-score", "-inf"])
    assert result.exit_code == 0, result.output
    to_stdout = runner.invoke(cli, ["-q", "export", "--pair", "de-en", "--json"])
    assert json.loads(to_stdout.stderr)["rows"] == len(to_stdout.stdout.splitlines()) > 0
    everything = ["-q", "export", "--pair", "de-en", "--min-score", "-inf", "--cursor", "all"]
    to_file = runner.invoke(cli, [*everything, "-o", str(tmp_path / "all.tsv"), "--json"])
    # strict JSON (no -Infinity), here and in the cursor's listing
    assert json.loads(to_file.stdout, parse_constant=pytest.fail)["min_score"] == "-inf"
    listed = runner.invoke(cli, ["cursors", "list", "--json"]).stdout
    assert [c["min_score"] for c in json.loads(listed, parse_constant=pytest.fail)] == ["-inf"]
    assert [line.split("\t")[1:] for line in result.stdout.splitlines()] == [
        [w["src"], w["tgt"]] for w in want
    ]
    out = tmp_path / "cli.jsonl.gz"
    args = ["export", "--pair", "en-de", "-o", str(out), "--format", "jsonl", "--json"]
    result = runner.invoke(cli, ["-q", *args, "--min-score", "0", "--margin", "distance"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == len(jsonl(out)) > 0 and summary["margin"] == "distance"
    since = ["--since", "2000-01-01T00:00:00Z"]
    result = runner.invoke(cli, ["-q", *args, *since])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == at_threshold > 0
    refused = runner.invoke(cli, ["-q", *args, "--cursor", "nightly", *since])
    assert refused.exit_code == 2 and "cannot go with --since" in refused.output
    for rows in (at_threshold, 0):  # whole the first time, then what changed: nothing
        result = runner.invoke(cli, ["-q", *args, "--cursor", "nightly"])
        assert json.loads(result.stdout)["rows"] == rows
    text_out = runner.invoke(cli, ["export", "--pair", "en-de", "-o", str(tmp_path / "t.tsv")])
    assert text_out.exit_code == 0 and text_out.stdout.startswith("exported ")

    for bad, code in (
        (["export", "--pair", "en-de", "--format", "moses"], 2),
        (["export", "--pair", "en-xx"], 2),
        (["export", "--pair", "en-de", "--since", "yesterday"], 2),
        (["export", "--pair", "en-de", "--format", "xml"], 2),
    ):
        result = runner.invoke(cli, ["-q", *bad])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output and "Error" in result.output


# -- migration -------------------------------------------------------------------------------------
def test_migration_adds_export_cursors(db_url: str, home: Path) -> None:
    database = database_at(db_url, "0001")
    assert "export_cursors" not in inspect(database.engine).get_table_names()
    database.upgrade()
    assert database.current_revision() == database.head_revision()
    columns = {c["name"] for c in inspect(database.engine).get_columns("export_cursors")}
    assert columns == {"name", "pair", "last_exported_at", "min_score", "filters", "updated_at"}
    database.dispose()
    result = CliRunner().invoke(cli, ["-q", "--db", db_url, "db", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["up_to_date"] is True
    result = CliRunner().invoke(cli, ["-q", "--db", db_url, "db", "upgrade", "--json"])
    assert result.exit_code == 0, result.output
    upgraded = json.loads(result.stdout)
    assert upgraded["before"] == upgraded["current"] == Database.head_revision()


INTERRUPTED_AT = """
import os, signal, sys
from bitextdb.cli import main
from bitextdb.db import export_sql
where, signum = sys.argv.pop(1), getattr(signal, sys.argv.pop(1))
real = getattr(export_sql, where)
def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signum)  # the signal lands just as this step starts
    return real(*args, **kwargs)
setattr(export_sql, where, interrupted)
main()
"""


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_stop_after_the_files_are_in_place_finishes_the_cursor_export(
    home: Path, tmp_path: Path, signum: str
) -> None:
    """Ctrl-C as the cursor moved (its files already in place) exited 130 with 'rerun to
    resume', and the rerun wrote an empty change set over the one the copy had not read."""
    build(home, n=(60, 60)).close()
    out = tmp_path / "new.jsonl"
    export = ["-q", "--home", str(home), "export", "--pair", "de-en", "--min-score", "-inf"]
    export += ["--cursor", "copy", "-o", str(out)]

    def run(where: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", INTERRUPTED_AT, where, signum, *export]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    stopped = run("texts")  # before: a stop, nothing written, the cursor where it was
    assert stopped.returncode == (130 if signum == "SIGINT" else 143), stopped.stderr
    assert "rerun to resume" in stopped.stderr and not out.exists()
    finished = run("save_cursor")  # after the files went into place: finished
    assert finished.returncode == 0, finished.stderr
    assert "after the work was committed: finishing it" in finished.stderr
    assert "Traceback" not in finished.stderr and "exported" in finished.stdout
    with bitextdb.open(home) as db:
        assert len(out.read_text().splitlines()) == len(
            list(iter_records(db, "de-en", min_score=INF))
        )
        assert [c["name"] for c in list_cursors(db)] == ["copy"]


def test_a_stop_while_the_command_line_loads_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from bitextdb import console

    class Loading(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise KeyboardInterrupt  # Ctrl-C while the command line's modules load

    monkeypatch.setitem(sys.modules, "bitextdb.cli", Loading("bitextdb.cli"))
    with pytest.raises(SystemExit) as stopped:
        console.main()
    assert stopped.value.code == 130


def test_a_reader_that_stops_early_ends_the_export_quietly(home: Path) -> None:
    """`bitextdb export ... | head -1`: exit 141, as cat, and nothing on stderr (the
    stream's cursor used to be closed at exit after its connection, logging tracebacks)."""
    build(home, n=(3000, 3000)).close()
    command = [sys.executable, "-c", "from bitextdb.cli import main; main()"]
    command += ["--home", str(home), "export", "--pair", "de-en", "--min-score", "-inf"]
    command += ["--format", "jsonl"]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert json.loads(reader.stdout.readline())["src_lang"] == "de"
    reader.stdout.close()  # the reader goes; the export has far more than a pipe holds
    errors = reader.stderr.read().decode()
    assert reader.wait(60) == 141 and errors == ""


def test_a_reader_that_stops_inside_the_one_batch_leaves_the_cursor_where_it_was(
    home: Path,
) -> None:
    """Every pair fits one batch, written in one call larger than a pipe holds: the pipe
    took 64 KiB, the reader went, and Python reported the part as written without an
    error, so the export exited 0 and saved its cursor past pairs never read."""
    build(home, n=(900, 900)).close()
    command = [sys.executable, "-c", "from bitextdb.cli import main; main()"]
    command += ["-q", "--home", str(home), "export", "--pair", "de-en", "--min-score", "-inf"]
    command += ["--format", "jsonl", "--with-sources", "--cursor", "nightly"]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    time.sleep(0.5)  # the export has written what the pipe holds and waits on the rest
    assert json.loads(reader.stdout.readline())["src_lang"] == "de"
    reader.stdout.close()
    errors = reader.stderr.read().decode()
    assert reader.wait(60) == 141, errors
    listed = CliRunner().invoke(cli, ["--home", str(home), "cursors", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    whole = CliRunner().invoke(
        cli,
        [
            "-q",
            "--home",
            str(home),
            "export",
            "--pair",
            "de-en",
            "--min-score",
            "-inf",
            "--format",
            "jsonl",
            "--with-sources",
            "--cursor",
            "nightly",
        ],
    )
    assert whole.exit_code == 0, whole.output
    assert len(whole.stdout.splitlines()) > 400 and len(whole.stdout.encode()) > 70_000


def test_output_to_dev_stdout_writes_through_the_open_descriptor(
    home: Path, tmp_path: Path
) -> None:
    """`-o /dev/stdout >> log` appends (opened again by name, the file was truncated) and
    `-o /dev/stdout | ...` writes into the pipe (followed, its target had no name)."""
    build(home, n=(40, 40)).close()
    command = f"{sys.executable} -c 'from bitextdb.cli import main; main()' -q --home {home}"
    command += " export --pair de-en --min-score -inf --format tsv -o /dev/stdout"
    log = tmp_path / "log.txt"
    log.write_text("precious\n")
    done = subprocess.run(f"{command} >> {log}", shell=True, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "precious" and len(lines) > 20
    assert lines[-1].startswith("exported ")  # the summary follows the pairs, as printed
    assert all(line.count("\t") == 2 for line in lines[1:-1])
    piped = subprocess.run(f"{command} | cat", shell=True, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    piped_lines = piped.stdout.splitlines()
    assert piped_lines[:-1] == lines[1:-1]  # the summaries differ in their seconds
    assert piped_lines[-1].startswith("exported ")


def test_since_out_of_range_or_as_text(home: Path, tmp_path: Path) -> None:
    """A moment past the last datetime once in UTC is bad input (exit 2), not a crash;
    the library's iter_withdrawn takes the ISO text export_pairs takes."""
    build(home).close()
    out = str(tmp_path / "o.tsv")
    for moment in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        result = CliRunner().invoke(
            cli, ["-q", "--home", str(home), "export", "--pair", "de-en", "--since", moment,
                  "--withdrawn", str(tmp_path / "w.tsv"), "-o", out]
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "outside the dates" in result.output and "Traceback" not in result.output
    with bitextdb.open(home) as db:
        assert list(iter_withdrawn(db, "de-en", since="2026-01-01T00:00:00Z")) == []
        with pytest.raises(InputError, match="outside the dates"):
            iter_records(db, "de-en", since="9999-12-31T23:59:59-01:00")


def test_a_stream_read_while_a_removal_commits_stays_whole(db_url: str, home: Path) -> None:
    """The pairs came from one statement but their texts from one statement a batch, each
    seeing the latest commit: `POST /remove` during `GET /export` took texts the stream's
    pairs still named, and the stream broke off with a KeyError."""
    db = build(home, db_url, n=(40, 40))
    try:
        since = "2000-01-01T00:00:00Z"
        whole = list(iter_records(db, "en-de", min_score=INF, batch=4))
        assert len(whole) > 8
        records = iter_records(db, "en-de", min_score=INF, batch=4)
        withdrawn = iter_withdrawn(db, "en-de", since=since, min_score=INF, batch=4)
        first = next(records)
        assert next(withdrawn, None) is None  # a snapshot taken before the removal
        assert db.remove("en", "embeddings")["sentences_removed"] == 40
        assert [first, *records] == whole  # as of the stream's start, whole
        assert list(iter_records(db, "en-de", min_score=INF)) == []
        gone = list(iter_withdrawn(db, "en-de", since=since, min_score=INF))
        assert {(r["src_id"], r["tgt_id"]) for r in gone} >= {
            (r["src_id"], r["tgt_id"]) for r in whole
        }
    finally:
        db.close()


def test_tmx_escapes_markup_and_lists_withdrawals(home: Path, tmp_path: Path) -> None:
    db = bitextdb.init(home, model="synthetic", dim=4, k=1)
    try:
        eye = np.eye(4, dtype=np.float32)
        db.ingest_embeddings("en", ['Tom & Jerry <said> "hi"', "plain", "\ufffeodd"], eye[:3])
        db.ingest_embeddings("zh-Hant", ["湯姆 & 傑利", "平凡的", "奇怪的"], eye[:3], source="zh")
        out, gone = tmp_path / "p.tmx", tmp_path / "w.tmx.gz"
        export_pairs(db, "en:zh-Hant", output=str(out), fmt="tmx", min_score=INF, cursor="c")
        root = ElementTree.parse(out).getroot()
        assert root.find("header").get("srclang") == "en"  # type: ignore[union-attr]
        units = {u["en"]: u["zh-Hant"] for u in tmx_units(out.read_text("utf-8"))}
        # markup escaped, a character XML cannot hold replaced
        assert units == {
            'Tom & Jerry <said> "hi"': "湯姆 & 傑利",
            "plain": "平凡的",
            "\ufffdodd": "奇怪的",
        }
        db.remove("zh-Hant", ["zh"])
        summary = export_pairs(
            db,
            "en:zh-Hant",
            output=str(out),
            fmt="tmx",
            min_score=INF,
            cursor="c",
            withdrawn=str(gone),
        )
        assert (summary["rows"], summary["withdrawn_rows"]) == (0, 3)
        assert tmx_units(out.read_text("utf-8")) == []  # still a whole document
        dropped = tmx_units(read_text(gone))
        assert {u["x-reason"] for u in dropped} == {"removed"}
        assert {u["en"] for u in dropped} == set(units)
        assert all(as_utc(u["x-withdrawn-at"]) for u in dropped)
        # the withdrawn pair's margin and cosine, as the pair export gave them
        assert all(float(u["x-cosine"]) == pytest.approx(1.0) for u in dropped)
        assert all(float(u["x-margin"]) > 0 for u in dropped)
    finally:
        db.close()


def test_cli_exports_tmx_to_stdout(home: Path) -> None:
    db = build(home)
    db.close()
    result = CliRunner().invoke(
        cli, ["-q", "export", "--pair", "en-de", "--format", "tmx", "--min-score", "-100"]
    )
    assert result.exit_code == 0, result.output
    units = tmx_units(result.stdout)
    assert len(units) > 5 and all(u["en"].startswith("en sentence") for u in units)


# -- parquet -----------------------------------------------------------------------------------
def test_parquet_holds_the_jsonl_records_typed(
    db_url: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import bitextdb.parquet

    monkeypatch.setattr(bitextdb.parquet, "ROW_GROUP", 5)  # several row groups
    monkeypatch.setattr(export_module, "BATCH", 3)
    db = build(home, db_url)
    try:
        options = {"min_score": INF, "with_sources": True, "with_ids": True}
        export_pairs(db, "de-en", output=str(tmp_path / "p.jsonl"), fmt="jsonl", **options)
        summary = export_pairs(
            db, "de-en", output=str(tmp_path / "p.parquet"), fmt="parquet", cursor="c", **options
        )
        table = pq.read_table(tmp_path / "p.parquet")
        assert table.to_pylist() == jsonl(tmp_path / "p.jsonl")
        assert summary["rows"] == table.num_rows > 5
        assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups > 1
        types = {field.name: str(field.type) for field in table.schema}
        assert types["margin"] == "double" and types["src_id"] == "int64"
        assert types["src_sources"] == "list<element: string>"

        # withdrawals: the jsonl records, their moment a timestamp
        db.remove("en", ["embeddings"])
        db.ingest_embeddings("en", ["en sentence new"], random_unit(1, 8, 9), source="more")
        gone = tmp_path / "w.parquet"
        summary = export_pairs(
            db,
            "de-en",
            output=str(tmp_path / "q.parquet"),
            fmt="parquet",
            cursor="c",
            withdrawn=str(gone),
            **options,
        )
        dropped = pq.read_table(gone).to_pylist()
        assert summary["withdrawn_rows"] == len(dropped) > 5
        assert {r["reason"] for r in dropped} == {"removed"}
        assert all(r["withdrawn_at"].utcoffset() is not None for r in dropped)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        # an empty selection is a file with the columns and no rows
        empty = tmp_path / "e.parquet"
        export_pairs(db, "de-en", output=str(empty), fmt="parquet", min_score=1e9)
        assert pq.read_table(empty).num_rows == 0
        assert pq.read_table(empty).column_names[:2] == ["src", "tgt"]
    finally:
        db.close()


def test_parquet_is_refused_where_it_cannot_go(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyarrow.parquet")
    db = build(home)
    try:
        for output, message in (("-", "binary file"), (str(tmp_path / "p.parquet.gz"), "drop .gz")):
            with pytest.raises(bitextdb.InputError, match=message):
                export_pairs(db, "de-en", output=output, fmt="parquet")
        target = tmp_path / "p.parquet"

        def broken(s, ids):  # type: ignore[no-untyped-def]
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(export_sql_module, "texts", broken)
        with pytest.raises(RuntimeError):
            export_pairs(db, "de-en", output=str(target), fmt="parquet", min_score=INF)
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
        with pytest.raises(bitextdb.InputError, match=r"pip install 'bitextdb\[parquet\]'"):
            export_pairs(db, "de-en", output=str(target), fmt="parquet")
    finally:
        db.close()


def test_a_withdrawal_file_that_cannot_be_written_leaves_the_pairs_file_as_it_was(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pairs file was moved into place before the withdrawals were flushed: a disk that
    filled then left new pairs beside the previous round's withdrawals."""
    db = build(home, n=(30, 30))
    (tmp_path / "out").mkdir()
    try:
        out, gone = tmp_path / "out" / "new.tsv", tmp_path / "out" / "drop.tsv"
        export_pairs(db, "de-en", output=str(out), cursor="c", withdrawn=str(gone))
        before = (out.read_bytes(), gone.read_bytes())
        db.ingest_embeddings("en", [f"more {i}" for i in range(20)], random_unit(20, 8, 9))
        closing = export_module._close_document
        calls: list[object] = []

        def full_disk(sink, fmt, spec):  # type: ignore[no-untyped-def]
            calls.append(sink)
            if len(calls) == 2:  # the withdrawals' file
                raise OSError(28, "No space left on device")
            closing(sink, fmt, spec)

        monkeypatch.setattr(export_module, "_close_document", full_disk)
        with pytest.raises(OSError, match="No space"):
            export_pairs(db, "de-en", output=str(out), cursor="c", withdrawn=str(gone))
        assert (out.read_bytes(), gone.read_bytes()) == before
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["drop.tsv", "new.tsv"]
        monkeypatch.setattr(export_module, "_close_document", closing)
        again = export_pairs(db, "de-en", output=str(out), cursor="c", withdrawn=str(gone))
        assert again["rows"] > 0 and out.read_bytes() != before[0]
    finally:
        db.close()


def test_sigterm_drops_the_temporary_files_and_exits_143(home: Path, tmp_path: Path) -> None:
    """SIGTERM (`timeout`, `kill`) ended an export where it stood, leaving its temporary
    files beside the outputs for good. Here the export has written its pairs and waits to
    open the withdrawals' named pipe."""
    db = build(home, n=(30, 30))
    out = tmp_path / "out"
    out.mkdir()
    export_pairs(db, "de-en", output=str(out / "new.tsv"), cursor="c")
    db.ingest_embeddings("en", [f"more {i}" for i in range(10)], random_unit(10, 8, 5))
    db.close()
    fifo = tmp_path / "drop.fifo"
    os.mkfifo(fifo)
    command = [sys.executable, "-c", "from bitextdb.cli import main; main()", "-q"]
    command += ["--home", str(home), "export", "--pair", "de-en", "--cursor", "c"]
    command += ["-o", str(out / "new.tsv"), "--withdrawn", str(fifo), "--format", "tsv"]
    exporter = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in out.iterdir()):
        assert exporter.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # on to the pipe's open, where it waits for a reader
    exporter.send_signal(signal.SIGTERM)
    _, errors = exporter.communicate(timeout=60)
    assert exporter.returncode == 143, errors
    assert b"Interrupted" in errors and b"Traceback" not in errors
    assert [p.name for p in out.iterdir()] == ["new.tsv"]


def test_a_descriptor_of_the_database_or_one_read_only_is_refused(
    home: Path, tmp_path: Path
) -> None:
    """`-o /dev/fd/3` wrote the pairs over the SQLite file this process had open there;
    `-o /dev/fd/0 < file` failed with an unexpected EBADF."""
    db = build(home)
    try:
        db.stats()  # the SQLite file is open now
        database = (home / "bitextdb.sqlite").resolve()
        fds = [
            int(fd.name)
            for fd in Path("/proc/self/fd").iterdir()
            if os.path.realpath(fd) == str(database)
        ]
        assert fds
        before = database.read_bytes()
        with pytest.raises(InputError, match="a file of the database itself"):
            export_pairs(db, "de-en", output=f"/dev/fd/{fds[0]}")
        assert database.read_bytes() == before
        read_only = tmp_path / "in.txt"
        read_only.write_text("keep\n")
        with open(read_only) as stream, pytest.raises(InputError, match="reading only"):
            export_pairs(db, "de-en", output=f"/dev/fd/{stream.fileno()}")
        assert read_only.read_text() == "keep\n"
    finally:
        db.close()
