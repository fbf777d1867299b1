"""Ingest through the library face: dedup, formats, skips, encoding, given vectors, resume."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

import bitextdb
import bitextdb.ingest as ingest_module
from bitextdb.encoder import normalize_rows
from bitextdb.readers import text_hash

EN = [
    "the cat sleeps on the table",
    "a dog runs in the street",
    "my friend reads a book",
    "the sun is high",
    "we eat bread at home",
]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def make_db(
    home: Path, db_url: str | None, tiny_bert: Path, **options: object
) -> bitextdb.BitextDB:
    options.setdefault("dim", 32)  # the tiny model's: init need not load it to ask
    return bitextdb.init(home, db=db_url, model=str(tiny_bert), **options)


def sentences(db: bitextdb.BitextDB, lang: str) -> dict[str, tuple[int, bool]]:
    """``text -> (id, indexed)`` of one language."""
    with db.db.session() as s:
        rows = s.execute(
            text("SELECT text, id, indexed FROM sentences WHERE lang = :l"), {"l": lang}
        ).all()
    return {t: (int(i), bool(ix)) for t, i, ix in rows}


def occurrences(db: bitextdb.BitextDB) -> list[tuple[str, int, str, str | None]]:
    """``(source name, position, text, ext_id)`` sorted."""
    with db.db.session() as s:
        rows = s.execute(
            text(
                "SELECT src.name, o.position, s.text, o.ext_id FROM occurrences o "
                "JOIN sources src ON src.id = o.source_id "
                "JOIN sentences s ON s.id = o.sentence_id"
            )
        ).all()
    return sorted((n, int(p), t, e) for n, p, t, e in rows)


def counts(db: bitextdb.BitextDB, lang: str) -> tuple[int, int, int]:
    """(sentences, occurrences, vectors) of one language."""
    with db.db.session() as s:
        n_sent = s.execute(
            text("SELECT count(*) FROM sentences WHERE lang = :l"), {"l": lang}
        ).scalar_one()
        n_occ = s.execute(
            text(
                "SELECT count(*) FROM occurrences o JOIN sources src ON src.id = o.source_id "
                "WHERE src.lang = :l"
            ),
            {"l": lang},
        ).scalar_one()
    return int(n_sent), int(n_occ), db.index.count(lang)


def only(result: dict) -> dict:
    (report,) = result["ingested"]
    return report


# -- dedup and incremental ingest --------------------------------------------------------------
def test_reingesting_the_same_file_adds_nothing(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "en.txt", EN)
    with make_db(home, db_url, tiny_bert) as db:
        first = only(db.ingest(path, "en", mine=False))
        assert (first["new"], first["encoded"], first["read"]) == (5, 5, 5)
        before = counts(db, "en")
        assert before == (5, 5, 5)
        again = only(db.ingest(path, "en", mine=False))
        assert again["new"] == 0
        assert again["encoded"] == 0
        assert again["duplicates"] == 5
        assert counts(db, "en") == before
    # and again in a new process-like session
    with bitextdb.open(home, db=db_url) as db:
        assert only(db.ingest(path, "en", mine=False))["new"] == 0
        assert counts(db, "en") == before


def test_appended_file_adds_only_its_new_lines(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "en.txt", EN[:3])
    with make_db(home, db_url, tiny_bert) as db:
        only(db.ingest(path, "en", mine=False))
        # two new distinct lines, one repeat of an old line, one repeat of a new line
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{EN[3]}\n{EN[0]}\n{EN[4]}\n{EN[3]}\n")
        report = only(db.ingest(path, "en", mine=False))
        assert report["new"] == 2
        assert report["encoded"] == 2
        assert counts(db, "en") == (5, 7, 5)
        assert all(indexed for _, indexed in sentences(db, "en").values())


def test_duplicates_within_and_across_files_are_stored_once(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    a = write_lines(tmp_path / "a.txt", [EN[0], EN[1], EN[0]])
    b = write_lines(tmp_path / "b.txt", [EN[1], "  the   cat sleeps on the table ", EN[2]])
    with make_db(home, db_url, tiny_bert) as db:
        ra = only(db.ingest(a, "en", mine=False))
        rb = only(db.ingest(b, "en", mine=False))
        assert (ra["new"], ra["duplicates"]) == (2, 1)
        assert (rb["new"], rb["duplicates"]) == (1, 2)
        stored = sentences(db, "en")
        assert sorted(stored) == sorted(EN[:3])
        assert db.index.count("en") == 3
        sa, sb = str(a.resolve()), str(b.resolve())
        assert occurrences(db) == sorted(
            [
                (sa, 0, EN[0], None),
                (sa, 1, EN[1], None),
                (sa, 2, EN[0], None),
                (sb, 0, EN[1], None),
                (sb, 1, EN[0], None),
                (sb, 2, EN[2], None),
            ]
        )


def test_same_text_in_two_languages_is_two_sentences(
    home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "x.txt", EN[:2])
    with make_db(home, None, tiny_bert) as db:
        db.ingest(path, "en", mine=False)
        db.ingest(path, "de", mine=False)
        assert counts(db, "en") == (2, 2, 2)
        assert counts(db, "de") == (2, 2, 2)
        assert sorted(db.index.languages()) == ["de", "en"]


# -- formats ---------------------------------------------------------------------------------
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_plain_and_compressed_text(
    suffix: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    data = "".join(f"{line}\n" for line in EN).encode()
    path = tmp_path / f"en.txt{suffix}"
    path.write_bytes(COMPRESSORS[suffix](data))
    with make_db(home, None, tiny_bert) as db:
        report = only(db.ingest(path, "en", mine=False))
        assert (report["read"], report["new"], report["encoded"]) == (5, 5, 5)
        assert sorted(sentences(db, "en")) == sorted(EN)
        assert db.index.count("en") == 5


@pytest.mark.parametrize(
    ("column", "id_column", "header"),
    [("text", "id", True), (2, 1, False), ("text", 1, True)],
)
def test_tsv_columns_and_ids(
    column: str | int,
    id_column: str | int,
    header: bool,
    home: Path,
    tiny_bert: Path,
    tmp_path: Path,
) -> None:
    rows = [f"s{i}\t{line}\tnoise {i}" for i, line in enumerate(EN[:3])]
    if header:
        rows.insert(0, "id\ttext\tother")
    path = write_lines(tmp_path / "en.tsv", rows)
    with make_db(home, None, tiny_bert) as db:
        report = only(db.ingest(path, "en", column=column, id_column=id_column, mine=False))
        assert report["new"] == 3
        name = str(path.resolve())
        assert occurrences(db) == sorted((name, i, EN[i], f"s{i}") for i in range(3))


def test_jsonl_field_and_id_field(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    path = tmp_path / "en.jsonl"
    records = [
        {"meta": {"text": EN[0]}, "key": 7},
        {"meta": {"text": EN[1]}, "key": "b-2"},
        {"text": "not this field", "key": "c"},  # no meta.text: malformed
        {"meta": {"text": EN[2]}, "key": "c-3"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    with make_db(home, None, tiny_bert) as db:
        report = only(db.ingest(path, "en", field="meta.text", id_field="key", mine=False))
        assert report["new"] == 3
        assert report["skipped"] == {"malformed": 1}
        name = str(path.resolve())
        assert occurrences(db) == sorted(
            [(name, 0, EN[0], "7"), (name, 1, EN[1], "b-2"), (name, 3, EN[2], "c-3")]
        )


def test_format_can_be_forced(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    path = tmp_path / "records.dat"
    path.write_text(json.dumps({"text": EN[0]}) + "\n", encoding="utf-8")
    with make_db(home, None, tiny_bert) as db:
        db.ingest(path, "en", fmt="jsonl", mine=False)
        assert list(sentences(db, "en")) == [EN[0]]


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def test_stdin(home: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(gzip.compress(f"{EN[0]}\n{EN[1]}\n".encode())))
    with make_db(home, None, tiny_bert) as db:
        report = only(db.ingest("-", "en", mine=False))
        name = report["source"]
        assert name.startswith("stdin@")
        assert report["new"] == 2
        assert occurrences(db) == [(name, 0, EN[0], None), (name, 1, EN[1], None)]
        assert db.index.count("en") == 2
    # a second stream is a source of its own: its positions do not overwrite the first's
    monkeypatch.setattr("sys.stdin", FakeStdin(f"{EN[2]}\n".encode()))
    with bitextdb.open(home) as db:
        second = only(db.ingest("-", "en", mine=False))["source"]
        assert second != name
        assert len(occurrences(db)) == 3


def test_skipped_counts_by_reason(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    path = tmp_path / "en.txt"
    path.write_bytes(
        b"short ok\n"  # kept
        b"\n"  # empty
        b"   \t \n"  # empty after normalisation
        b"x\n"  # too short (min_chars 2)
        b"this line is far too long for the limit\n"  # too long
        b"bad \xff\xfe bytes\n"  # invalid UTF-8
        b"also fine\n"  # kept
    )
    with make_db(home, None, tiny_bert, max_chars=12) as db:
        report = only(db.ingest(path, "en", mine=False))
        assert report["read"] == 7
        assert report["skipped"] == {"empty": 2, "too_short": 1, "too_long": 1, "invalid_utf8": 1}
        assert report["new"] == 2
        assert sorted(sentences(db, "en")) == ["also fine", "short ok"]
        assert db.stats()["settings"]["max_chars"] == 12


def test_only_new_sentences_are_encoded(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_lines(tmp_path / "a.txt", [EN[0], EN[1], EN[0]])
    second = write_lines(tmp_path / "b.txt", [EN[1], EN[2], EN[0], EN[3]])
    with make_db(home, db_url, tiny_bert) as db:
        encoder = db.encoder
        seen: list[list[str]] = []
        original = encoder.encode

        def counting(texts: list[str]) -> np.ndarray:
            seen.append(list(texts))
            return original(texts)

        monkeypatch.setattr(encoder, "encode", counting)
        assert only(db.ingest(first, "en", mine=False))["encoded"] == 2
        assert sorted(t for batch in seen for t in batch) == sorted(EN[:2])
        seen.clear()
        assert only(db.ingest(second, "en", mine=False))["encoded"] == 2
        assert sorted(t for batch in seen for t in batch) == sorted([EN[2], EN[3]])
        seen.clear()
        db.ingest([first, second], "en", mine=False)
        assert seen == []


def test_report_says_how_long_each_stage_worked(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path / "a.txt", EN[:4])
    with make_db(home, None, tiny_bert) as db:
        original = db.encoder.encode

        def slow(texts: list[str]) -> np.ndarray:
            time.sleep(0.3)
            return original(texts)

        monkeypatch.setattr(db.encoder, "encode", slow)
        report = only(db.ingest(path, "en", mine=False))
    stages = report["stage_seconds"]
    assert set(stages) == {
        "load_model",
        "read",
        "store",
        "encode",
        "wait_for_vectors",
        "upsert",
        "wait_for_upserts",
        "mark_indexed",
    }
    assert all(seconds >= 0 for seconds in stages.values())
    assert stages["encode"] >= 0.3  # in process, the encode stage does the work
    assert stages["encode"] == max(stages.values())
    assert sum(stages.values()) - stages["encode"] < report["seconds"]


def test_loading_the_model_in_a_later_batch_is_not_counted_as_storing(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is loaded before the first new sentence is stored; when that sentence
    came in a later batch, the load was counted in the storing stage (seen as 7 s of
    `store` for 10 changed lines)."""
    import bitextdb.api
    import bitextdb.ingest

    with make_db(home, None, tiny_bert) as db:
        db.ingest(write_lines(tmp_path / "a.txt", EN[:2]), "en", mine=False)
    loading = bitextdb.api.BitextDB.encoder

    def slow(self):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        return loading.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(bitextdb.api.BitextDB, "encoder", property(slow))
    monkeypatch.setattr(bitextdb.ingest, "BATCH", 2)
    with bitextdb.open(home) as db:  # a new handle: the model is not loaded yet
        report = only(db.ingest(write_lines(tmp_path / "b.txt", EN[:4]), "en", mine=False))
    assert (report["new"], report["encoded"]) == (2, 2)
    stages = report["stage_seconds"]
    assert stages["load_model"] >= 0.5 and stages["store"] < 0.5, stages


def test_stored_vectors_are_the_models(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "en.txt", EN)
    with make_db(home, None, tiny_bert) as db:
        db.ingest(path, "en", mine=False)
        ids = {t: i for t, (i, _) in sentences(db, "en").items()}
        found, vectors = db.index.retrieve("en", np.array([ids[t] for t in EN]))
        assert found.tolist() == [ids[t] for t in EN]
        expected = db.encoder.encode(EN)
        assert np.allclose(vectors, expected, atol=1e-5)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# -- bring your own vectors ------------------------------------------------------------------
def byo_db(home: Path, db_url: str | None = None) -> bitextdb.BitextDB:
    return bitextdb.init(home, db=db_url, model="laser-like", dim=8)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32) * 3


def assert_vectors_match(db: bitextdb.BitextDB, lines: list[str], given: np.ndarray) -> None:
    ids = {t: i for t, (i, _) in sentences(db, "en").items()}
    wanted = [ids[t] for t in lines]
    found, vectors = db.index.retrieve("en", np.array(wanted))
    assert found.tolist() == wanted
    assert np.allclose(vectors, normalize_rows(given), atol=1e-6)


def test_given_vectors_npy(db_url: str, home: Path, tmp_path: Path) -> None:
    lines = EN[:4]
    path = write_lines(tmp_path / "en.txt", [lines[0], "", lines[1], lines[2], lines[3]])
    given = rows(5)
    np.save(tmp_path / "en.npy", given)
    with byo_db(home, db_url) as db:
        report = only(db.ingest(path, "en", embeddings=tmp_path / "en.npy"))
        assert (report["new"], report["encoded"]) == (4, 4)
        assert db.index.count("en") == 4
        # line i of the file has row i of the matrix (the empty line 1 keeps its row)
        assert_vectors_match(db, lines, given[[0, 2, 3, 4]])
        assert all(indexed for _, indexed in sentences(db, "en").values())


def test_given_vectors_raw_float32(home: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "en.txt", EN[:3])
    given = rows(3, seed=1)
    given.tofile(tmp_path / "en.f32")
    with byo_db(home) as db:
        with pytest.raises(bitextdb.InputError, match="--dim"):
            db.ingest(path, "en", embeddings=tmp_path / "en.f32")
        report = only(db.ingest(path, "en", embeddings=tmp_path / "en.f32", dim=8))
        assert report["new"] == 3
        assert_vectors_match(db, EN[:3], given)
        # a raw file that is not whole rows of the given dimension
        with pytest.raises(bitextdb.InputError):
            db.ingest(path, "en", embeddings=tmp_path / "en.f32", dim=5)


def test_given_vectors_row_count_mismatch_stores_nothing(home: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "en.txt", EN[:3])
    np.save(tmp_path / "en.npy", rows(4))
    with byo_db(home) as db:
        with pytest.raises(bitextdb.InputError, match="line-aligned"):
            db.ingest(path, "en", embeddings=tmp_path / "en.npy")
        assert counts(db, "en") == (0, 0, 0)
        assert db.stats()["languages"] == {}


def test_given_vectors_of_the_wrong_dimension(home: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "en.txt", EN[:3])
    np.save(tmp_path / "en.npy", np.ones((3, 16), dtype=np.float32))
    with byo_db(home) as db:
        with pytest.raises(bitextdb.ModelMismatchError):
            db.ingest(path, "en", embeddings=tmp_path / "en.npy")
        assert db.stats()["languages"] == {}


@pytest.mark.parametrize("bad", [0.0, np.nan, np.inf])
def test_given_zero_or_nonfinite_row_stores_nothing(bad: float, home: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "en.txt", EN[:3])
    given = rows(3)
    given[1] = bad
    np.save(tmp_path / "en.npy", given)
    with byo_db(home) as db:
        with pytest.raises(bitextdb.InputError, match=r"Row 2 of the embeddings \(record 2\)"):
            db.ingest(path, "en", embeddings=tmp_path / "en.npy")
        assert counts(db, "en") == (0, 0, 0)
        # a corrected file then goes in whole, and mining needs no model
        given[1] = 1.0
        np.save(tmp_path / "en.npy", given)
        assert only(db.ingest(path, "en", embeddings=tmp_path / "en.npy"))["new"] == 3
        assert counts(db, "en") == (3, 3, 3)
        assert_vectors_match(db, EN[:3], given)


def test_ingest_embeddings(db_url: str, home: Path) -> None:
    given = rows(3, seed=2)
    with byo_db(home, db_url) as db:
        result = db.ingest_embeddings("en", EN[:3], given)
        assert only(result)["new"] == 3
        assert_vectors_match(db, EN[:3], given)
        with pytest.raises(bitextdb.InputError):
            db.ingest_embeddings("en", EN[:3], rows(2))
        with pytest.raises(bitextdb.InputError):
            db.ingest_embeddings("en", EN[:1], rows(1)[0])  # 1-D
        with pytest.raises(bitextdb.ModelMismatchError):
            db.ingest_embeddings("en", EN[:3], np.ones((3, 4), dtype=np.float32))
        with pytest.raises(bitextdb.InputError):
            db.ingest_embeddings("en", [EN[3], EN[4]], np.vstack([rows(1), np.zeros((1, 8))]))
        assert counts(db, "en") == (3, 3, 3)
        # a second call with one known and one new sentence adds just the new one
        again = db.ingest_embeddings("en", [EN[0], EN[3]], rows(2, seed=3), mine=False)
        assert only(again)["new"] == 1
        assert counts(db, "en")[0] == 4
        assert db.index.count("en") == 4


def test_given_vector_files_are_checked_before_anything_is_stored(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad row far down the file (past the first batch) stores none of the file; rows
    of huge but finite numbers are unit vectors like any other."""
    monkeypatch.setattr(ingest_module, "BATCH", 4)
    monkeypatch.setattr(ingest_module, "CHECK_ROWS", 3)
    lines = [f"line number {i}" for i in range(10)]
    path = write_lines(tmp_path / "en.txt", lines)
    with byo_db(home) as db:
        for bad_row in (np.nan, np.inf, 0.0):
            given = rows(10)
            given[8] = bad_row
            np.save(tmp_path / "bad.npy", given)
            with pytest.raises(bitextdb.InputError, match=r"Row 9 of the embeddings \(record 9\)"):
                db.ingest(path, "en", embeddings=tmp_path / "bad.npy")
            assert counts(db, "en") == (0, 0, 0) and db.sources("en") == []
        wide = rows(10).astype(np.float64)
        wide[8] = 1e300  # beyond float32
        np.save(tmp_path / "wide.npy", wide)
        with pytest.raises(
            bitextdb.InputError, match=r"Row 9 of the embeddings \(record 9\) holds NaN or infinity"
        ):
            db.ingest(path, "en", embeddings=tmp_path / "wide.npy")
        np.save(tmp_path / "words.npy", np.array([["a"] * 8] * 10))
        (tmp_path / "empty.npy").write_bytes(b"")
        for name, message in (("words.npy", "not real numbers"), ("empty.npy", "empty")):
            with pytest.raises(bitextdb.InputError, match=message):
                db.ingest(path, "en", embeddings=tmp_path / name)
        huge = rows(10)
        huge[8] = np.float32(3e38)  # its norm overflows float32
        np.save(tmp_path / "huge.npy", huge)
        db.ingest(path, "en", embeddings=tmp_path / "huge.npy", mine=False)
        ids = {t: i for t, (i, _) in sentences(db, "en").items()}
        stored = dict(zip(*db.index.retrieve("en", np.array(list(ids.values()), np.int64))))
        assert stored[ids[lines[8]]] == pytest.approx(np.full(8, 8**-0.5), abs=1e-6)


def test_a_model_that_cannot_load_stores_no_sentence(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sentence stored has a vector or is about to: the model is loaded before the
    first new sentence is stored (in the first batch or a later one), and a model folder
    that is gone is said so at once."""
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    first = write_lines(tmp_path / "first.txt", EN[:3])
    with make_db(home, None, model) as db:
        db.ingest(first, "en", mine=False)
    model.rename(tmp_path / "moved")
    monkeypatch.setattr(ingest_module, "BATCH", 2)
    fresh = write_lines(tmp_path / "fresh.txt", EN[3:])
    later = write_lines(tmp_path / "later.txt", EN[:2] + EN[3:])  # batch 2 is new
    with bitextdb.open(home) as db:
        for path in (fresh, later):
            with pytest.raises(bitextdb.ModelLoadError, match="does not exist"):
                db.ingest(path, "en", mine=False)
        assert counts(db, "en")[0] == 3 and db.index.count("en") == 3
        assert str(fresh.resolve()) not in {s["name"] for s in db.sources("en")}
        assert db.check().ok


def test_a_bad_file_after_good_ones_leaves_those_mined(
    home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    good = write_lines(tmp_path / "good.txt", EN[:3])
    other = write_lines(tmp_path / "other.txt", ["die katze schläft", "ein hund läuft"])
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"ein satz\n" * 50)[:-12])  # cut short
    with make_db(home, None, tiny_bert) as db:
        db.ingest(other, "de")
        with pytest.raises(bitextdb.InputError, match=r"were ingested and mined: .*good\.txt"):
            db.ingest([good, broken], "en")
        assert counts(db, "en") == (3, 3, 3)
        assert db.check().ok  # nothing waits to be mined


def test_a_file_damaged_partway_says_what_it_left_stored(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bitextdb.ingest.BATCH", 50)
    lines = [f"sentence number {i} of a long file" for i in range(4000)]
    whole = ("\n".join(lines) + "\n").encode()
    damaged = tmp_path / "big.txt.gz"
    damaged.write_bytes(gzip.compress(whole)[:-2000])  # its end cut off
    with make_db(home, None, tiny_bert) as db:
        with pytest.raises(bitextdb.InputError) as caught:
            db.ingest(damaged, "en")
        message = str(caught.value)
        assert message.startswith(f"{damaged} is not a valid gzip file")
        found = re.search(r"The ([\d,]+) lines read before that are stored in the source", message)
        assert found, message
        assert f"bitextdb remove --lang en --source {damaged.resolve()}" in message
        (source,) = db.sources("en")
        assert 0 < source["occurrences"] == int(found[1].replace(",", "")) < len(lines)
        damaged.write_bytes(gzip.compress(whole))  # whole again: the source gains the rest
        db.ingest(damaged, "en")
        assert db.sources("en")[0]["occurrences"] == len(lines) and db.check().ok
        # read with --append, the next read is a source of its own: only removal is offered
        damaged.write_bytes(gzip.compress(whole)[:-2000])
        with pytest.raises(bitextdb.InputError) as caught:
            db.ingest(damaged, "en", append=True)
        assert "ingest the file again" not in str(caught.value)
        assert re.search(r"stored in the source .*@.*: take them out", str(caught.value))


def test_ingest_texts(home: Path, tiny_bert: Path) -> None:
    with make_db(home, None, tiny_bert) as db:
        report = only(db.ingest_texts("en", [EN[0], f" {EN[0]} ", EN[1], "", "x"], mine=False))
        assert (report["new"], report["duplicates"]) == (2, 1)
        assert db.index.count("en") == 2


# -- model identity --------------------------------------------------------------------------
def test_model_mismatch_and_repeated_init(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "en.txt", EN)
    with make_db(home, db_url, tiny_bert, threshold=1.05) as db:
        db.ingest(path, "en", mine=False)
        settings = db.settings.to_dict()
    with pytest.raises(bitextdb.ModelMismatchError, match="other"):
        bitextdb.open(home, db=db_url, model="other")
    with pytest.raises(bitextdb.ModelMismatchError):
        bitextdb.init(home, db=db_url, model="other")
    with pytest.raises(bitextdb.ModelMismatchError):
        bitextdb.init(home, db=db_url, model=str(tiny_bert), dim=16)
    with pytest.raises(bitextdb.ModelMismatchError):
        bitextdb.init(home, db=db_url, model=str(tiny_bert), k=7)
    with bitextdb.open(home, db=db_url, model=str(tiny_bert)) as db:
        assert db.settings.to_dict() == settings
    # the same init again: harmless, settings and data kept
    with make_db(home, db_url, tiny_bert) as db:
        assert db.settings.to_dict() == settings
        assert counts(db, "en") == (5, 5, 5)
        assert only(db.ingest(path, "en", mine=False))["new"] == 0
    with bitextdb.open(home, db=db_url) as db:
        assert db.settings.to_dict() == settings


def test_a_model_folder_given_relatively_works_from_anywhere(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path / "en.txt", EN)
    monkeypatch.chdir(tiny_bert.parent)
    with bitextdb.init(home, model=tiny_bert.name) as db:
        assert db.settings.model == str(tiny_bert.resolve())
    monkeypatch.chdir(tmp_path)
    with bitextdb.open(home, model=str(tiny_bert)) as db:  # written another way: the same
        assert only(db.ingest(path, "en", mine=False))["encoded"] == 5
    monkeypatch.chdir(tiny_bert.parent)
    with bitextdb.init(home, model=f"./{tiny_bert.name}") as db:
        assert db.settings.model == str(tiny_bert.resolve())
    with pytest.raises(bitextdb.ModelMismatchError):
        bitextdb.open(home, model="sentence-transformers/LaBSE")


def test_open_before_init(home: Path) -> None:
    with pytest.raises(bitextdb.NotInitializedError, match="bitextdb init"):
        bitextdb.open(home)


def test_bad_language_code(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "en.txt", EN)
    with make_db(home, None, tiny_bert) as db:
        with pytest.raises(bitextdb.ConfigError):
            db.ingest(path, "en de")
        assert db.stats()["languages"] == {}


@pytest.mark.parametrize("problem", ["missing", "directory", "binary", "no_column"])
def test_unreadable_input_stores_nothing(
    problem: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    fmt, column = "auto", None
    if problem == "missing":
        path = tmp_path / "missing.txt"
    elif problem == "directory":
        path = tmp_path
    elif problem == "binary":
        path = tmp_path / "blob.txt"
        path.write_bytes(bytes(range(256)) * 64)
    else:
        path = write_lines(tmp_path / "x.tsv", ["a\tb", "one\ttwo"])
        column = "text"
    with make_db(home, None, tiny_bert) as db:
        with pytest.raises(bitextdb.InputError):
            db.ingest(path, "en", fmt=fmt, column=column)
        assert db.stats()["languages"] == {}
        assert db.index.languages() == []


# -- resume ----------------------------------------------------------------------------------
def test_crash_before_vectors_then_rerun_completes(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path / "en.txt", EN)
    with make_db(home, db_url, tiny_bert) as db:
        real_upsert = db.index.upsert
        calls = {"n": 0}

        def crash_once(lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("killed")
            real_upsert(lang, ids, vectors)

        monkeypatch.setattr(db.index, "upsert", crash_once)
        with pytest.raises(RuntimeError, match="killed"):
            db.ingest(path, "en", mine=False)
        stored = sentences(db, "en")
        assert len(stored) == 5
        assert not any(indexed for _, indexed in stored.values())
        assert db.index.count("en") == 0
        # the rerun encodes what the crash left behind and adds nothing new
        report = only(db.ingest(path, "en", mine=False))
        assert report["new"] == 0
        stored = sentences(db, "en")
        assert all(indexed for _, indexed in stored.values())
        assert db.index.count("en") == len(stored) == 5
        found, _ = db.index.retrieve("en", np.array(sorted(i for i, _ in stored.values())))
        assert len(found) == 5


def test_mine_resumes_unindexed_sentences(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    with make_db(home, db_url, tiny_bert) as db:
        db.ingest(write_lines(tmp_path / "en.txt", EN[:2]), "en", mine=False)
        # a crash after the sentences were committed but before their vectors
        with db.db.session() as s:
            for t in EN[2:]:
                s.execute(
                    text(
                        "INSERT INTO sentences (lang, text, text_hash, indexed, created_at) "
                        "VALUES ('en', :t, :h, :f, CURRENT_TIMESTAMP)"
                    ),
                    {"t": t, "h": text_hash(t), "f": False},
                )
        assert db.index.count("en") == 2
        db.mine()
        stored = sentences(db, "en")
        assert len(stored) == 5
        assert all(indexed for _, indexed in stored.values())
        assert db.index.count("en") == 5


def test_bulk_rows_are_stored_as_the_orm_stores_them(
    db_url: str, home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    """Rows sent through the driver's executemany (``db/bulk.py``) read back like rows the
    ORM wrote: the same timestamp format (SQLite keeps text), booleans, ids."""
    from sqlalchemy import select

    from bitextdb.db.tables import Sentence, Source

    path = write_lines(tmp_path / "en.txt", EN)
    with make_db(home, db_url, tiny_bert) as db:
        db.ingest(path, "en", mine=False)
        with db.db.session() as s:
            raw = s.execute(text("SELECT created_at FROM sentences")).scalars().all()
            raw_source = s.execute(text("SELECT created_at FROM sources")).scalar_one()
            sentences = s.execute(select(Sentence)).scalars().all()
            source = s.execute(select(Source)).scalar_one()
    assert len(raw) == len(sentences) == len(EN)
    if isinstance(raw_source, str):  # SQLite: both written by SQLAlchemy's own format
        assert {len(value) for value in raw} == {len(raw_source)}
        assert not any("+" in value or "T" in value for value in raw)
    for sentence in sentences:
        assert sentence.indexed is True
        assert abs((sentence.created_at - source.created_at).total_seconds()) < 60


def test_a_sentence_met_again_while_its_first_batch_is_in_flight_is_not_scheduled_twice(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first stage runs batches ahead of the last; a sentence repeated a few batches
    later, before its first batch is marked indexed, must keep its first vector and be
    encoded once."""
    import time

    import bitextdb.ingest as ingest

    monkeypatch.setattr(ingest, "BATCH", 10)
    original = ingest.Ingestor._mark_indexed

    def slow_mark(self, ids, in_flight=None):  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # the later batches are stored meanwhile
        return original(self, ids, in_flight)

    monkeypatch.setattr(ingest.Ingestor, "_mark_indexed", slow_mark)
    texts = [f"sentence {i}" for i in range(30)] + ["sentence 3", "sentence 7"]
    given = np.random.default_rng(4).normal(size=(len(texts), 8)).astype(np.float32)
    with byo_db(home) as db:
        report = only(db.ingest_embeddings("en", texts, given, mine=False))
        assert (report["new"], report["duplicates"], report["encoded"]) == (30, 2, 30)
        assert_vectors_match(db, texts[:30], given[:30])


def test_a_pipe_is_a_source_of_its_own_as_stdin_is(
    home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    """`ingest <(zcat x.gz)`: a pipe is read once; its source is not a file to follow or
    to find missing (`remove --missing` would take its sentences)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "w", encoding="utf-8") as out:
            out.write("\n".join(EN[:3]) + "\n")

    with make_db(home, None, tiny_bert) as db:
        with pytest.raises(bitextdb.InputError, match=r"a pipe.*gone once read"):
            db.ingest(fifo, "en", dry_run=True)
        writer = threading.Thread(target=feed)
        writer.start()
        db.ingest(fifo, "en", mine=False)
        writer.join()
        (source,) = db.sources("en")
        assert source["name"].startswith(f"{fifo}@") and source["sentences"] == 3
        assert not source["missing"] and db.remove_missing(dry_run=True) == []
