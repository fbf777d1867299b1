"""Records split into sentences (``ingest --split-sentences``), and in-memory texts appended
to their source (``ingest_texts``, ``ingest_embeddings``, ``POST /ingest``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

import bitextdb
from bitextdb.cli import cli
from bitextdb.errors import InputError
from bitextdb.export import iter_records
from bitextdb.readers import Line, ReadStats, read_lines, read_texts
from bitextdb.segment import sentence_splitter
from tests.schema_helpers import database_at, migrate, model_differences

EN = [
    "the dog sleeps in the house.",
    "my friend reads a book.",
    "the city is big.",
    "the cat drinks water.",
    "the child plays with the dog.",
    "the house is old.",
]
DE = [
    "der hund schläft im haus.",
    "mein freund liest ein buch.",
    "die stadt ist groß.",
    "die katze trinkt wasser.",
    "das kind spielt mit dem hund.",
    "das haus ist alt.",
]


def unit(rows: list[list[float]]) -> np.ndarray:
    vecs = np.array(rows, dtype=np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def occurrences(db: bitextdb.BitextDB) -> list[tuple[str, int, int, str | None, str]]:
    """(source, position, part, ext id, text) of every occurrence, in order."""
    with db.db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT so.name, o.position, o.part, o.ext_id, se.text FROM occurrences o "
                "JOIN sources so ON so.id = o.source_id JOIN sentences se ON se.id = "
                "o.sentence_id ORDER BY so.name, o.position, o.part"
            )
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


# -- the splitter ------------------------------------------------------------------------------
def test_splitter_knows_abbreviations_line_breaks_and_languages() -> None:
    en = sentence_splitter("en")
    assert en("Dr. Smith came at 5 p.m. on Jan. 3rd! Did he stay? Yes.") == [
        "Dr. Smith came at 5 p.m. on Jan. 3rd! ",
        "Did he stay? ",
        "Yes.",
    ]
    # a line break always ends a sentence (titles, list items); blank pieces are dropped
    assert en("A title\r\nFirst one. Second one\n\n\u2028 \nlast") == [
        "A title",
        "First one. ",
        "Second one",
        "last",
    ]
    assert en("   ") == [] and en("") == []
    de = sentence_splitter("de")
    assert de("Es wurde z. B. am 3. Mai gebaut. Gut.") == [
        "Es wurde z. B. am 3. Mai gebaut. ",
        "Gut.",
    ]
    assert sentence_splitter("ja")("家は古い。とても古い。") == ["家は古い。", "とても古い。"]
    # Portuguese rules for a regional code ("Dra." is no abbreviation in English's)
    assert sentence_splitter("pt-BR")("A Dra. Silva chegou. Ela saiu.") == [
        "A Dra. Silva chegou. ",
        "Ela saiu.",
    ]
    # any region or script: sentencex would take English rules for es-MX ("La Sra." alone)
    for code in ("es-MX", "es-419", "es_ES"):
        assert sentence_splitter(code)("La Sra. García no vino. Ella es de aquí.") == [
            "La Sra. García no vino. ",
            "Ella es de aquí.",
        ], code
    assert sentence_splitter("ru-RU")("Это т. е. пример. Да.") == ["Это т. е. ", "пример. ", "Да."]


def test_a_wide_space_before_a_full_stop_is_split_and_kept() -> None:
    # sentencex slices by bytes there and panicked on a no-break, thin or ideographic space
    for space in ("\u00a0", "\u202f", "\u2009", "\u3000"):
        for lang in ("fr", "en"):
            # an initial (plan B .) ends no sentence, as with an ASCII space
            line = f"Il a choisi le plan B{space}. Puis il est parti."
            assert sentence_splitter(lang)(line) == [line], (lang, space)
            line = f"Ils ont dit non{space}. Puis il est parti."
            assert sentence_splitter(lang)(line) == [
                f"Ils ont dit non{space}. ",
                "Puis il est parti.",
            ], (lang, space)


def test_a_panic_in_sentencex_keeps_the_line_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import sentencex

    class PanicException(BaseException):  # what pyo3 raises for a Rust panic
        pass

    def panic(lang: str, text: str) -> list[str]:
        raise PanicException("byte index is not a char boundary")

    monkeypatch.setattr(sentencex, "segment", panic)
    assert sentence_splitter("fr")("Une phrase. Une autre.\nLa suite.") == [
        "Une phrase. Une autre.",
        "La suite.",
    ]


# -- reading -----------------------------------------------------------------------------------
def test_split_records_share_a_position_and_number_their_parts(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    long_sentence = "word " * 30
    records = [
        {"id": "d1", "text": "The house is old. It has a garden.\nA title"},
        {"id": "d2", "text": "   "},
        {"id": "d3", "text": f"It is good. {long_sentence.strip()}. Fine one."},
        {"id": "x" * 255, "text": "One here. Two here."},  # id + "#N" too long
        {"id": "y" * 300, "text": "One here. Two here."},  # too long already: counted once
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    stats = ReadStats()
    lines = list(
        read_lines(path, id_field="id", max_chars=100, split=sentence_splitter("en"), stats=stats)
    )
    assert lines == [
        Line(0, "The house is old.", "d1#1", 0),
        Line(0, "It has a garden.", "d1#2", 1),
        Line(0, "A title", "d1#3", 2),
        Line(2, "It is good.", "d3#1", 0),
        Line(2, "Fine one.", "d3#3", 2),  # the part numbers count the sentence too long
    ]
    assert (stats.lines, stats.sentences, stats.empty, stats.too_long) == (5, 8, 1, 1)
    assert (stats.too_short, stats.malformed) == (0, 3)  # two parts, then one record


def test_without_splitting_a_record_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("One here. Two here.\n", encoding="utf-8")
    assert list(read_lines(path)) == [Line(0, "One here. Two here.")]
    stats = ReadStats()
    assert list(read_lines(path, max_chars=10, stats=stats)) == []
    assert stats.too_long == 1 and stats.sentences == 0
    # split, each sentence is measured on its own
    assert [x.text for x in read_lines(path, max_chars=10, split=sentence_splitter("en"))] == [
        "One here.",
        "Two here.",
    ]


def test_read_texts_checks_items_and_counts_lone_surrogates() -> None:
    with pytest.raises(InputError, match="Sentence 2 is not a string"):
        read_texts(["fine", 3])  # type: ignore[list-item]
    stats = ReadStats()
    texts = ["Some words. More words.", "bad \ud800", "x"]
    got = list(read_texts(texts, split=sentence_splitter("en"), stats=stats))
    assert got == [Line(0, "Some words.", None, 0), Line(0, "More words.", None, 1)]
    assert (stats.lines, stats.invalid_utf8, stats.too_short) == (3, 1, 1)


# -- ingesting split records -------------------------------------------------------------------
def pairs_of(db: bitextdb.BitextDB) -> list[tuple[str, str, float]]:
    return [
        (r["src"], r["tgt"], round(r["margin"], 5))
        for r in iter_records(db, "de-en", min_score=-np.inf)
    ]


def test_split_paragraphs_mine_as_their_sentences_one_a_line(
    db_url: str, home: Path, static_model: Path, tmp_path: Path
) -> None:
    paragraphs = tmp_path / "en.txt"
    paragraphs.write_text(" ".join(EN[:3]) + "\n\n" + " ".join(EN[3:]) + "\n", encoding="utf-8")
    (tmp_path / "de.txt").write_text("\n".join(DE) + "\n", encoding="utf-8")
    (tmp_path / "en-lines.txt").write_text("\n".join(EN) + "\n", encoding="utf-8")
    with bitextdb.init(tmp_path / "reference", model=str(static_model)) as ref:
        ref.ingest(tmp_path / "en-lines.txt", "en")
        ref.ingest(tmp_path / "de.txt", "de")
        expected = pairs_of(ref)
    assert len(expected) == 6

    db = bitextdb.init(home, db=db_url, model=str(static_model))
    try:
        first = db.ingest(paragraphs, "en", split_sentences=True)["ingested"][0]
        assert (first["read"], first["sentences"], first["new"]) == (3, 6, 6)
        assert first["skipped"] == {"empty": 1}
        db.ingest(tmp_path / "de.txt", "de")
        assert pairs_of(db) == expected
        name = str(paragraphs.resolve())
        assert [(o[0], o[1], o[2], o[4]) for o in occurrences(db) if o[0] == name] == [
            (name, 0, 0, EN[0]),
            (name, 0, 1, EN[1]),
            (name, 0, 2, EN[2]),
            (name, 2, 0, EN[3]),
            (name, 2, 1, EN[4]),
            (name, 2, 2, EN[5]),
        ]
        (source,) = db.sources("en")
        assert (source["records"], source["occurrences"], source["split_sentences"]) == (3, 6, True)

        # again: nothing new, nothing doubled
        again = db.ingest(paragraphs, "en", split_sentences=True)["ingested"][0]
        assert (again["new"], again["duplicates"]) == (0, 6)
        before = occurrences(db)
        # the same source unsplit would give its positions a second meaning: refused
        with pytest.raises(InputError, match="was ingested with --split-sentences"):
            db.ingest(paragraphs, "en")
        with pytest.raises(InputError, match="without --split-sentences"):
            db.ingest(tmp_path / "de.txt", "de", split_sentences=True)
        assert occurrences(db) == before and pairs_of(db) == expected

        gone = db.remove("en", [name])
        assert (gone["occurrences"], gone["sentences_removed"]) == (6, 6)
        assert "en" not in db.stats()["languages"]
    finally:
        db.close()


def test_cli_split_sentences(home: Path, static_model: Path, tmp_path: Path) -> None:
    # sentencex's German rules want a capital after a full stop (a lower-case word may
    # follow an ordinal: "am 3. mai")
    de = [s[0].upper() + s[1:] for s in DE]
    runner = CliRunner()
    assert runner.invoke(cli, ["-q", "init", "--model", str(static_model)]).exit_code == 0
    docs = tmp_path / "docs.jsonl.gz"
    with gzip.open(docs, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": 7, "body": {"text": " ".join(de[:2])}}) + "\n")
        f.write(json.dumps({"id": 8, "body": {"text": de[2]}}) + "\n")
    args = ["ingest", str(docs), "--lang", "de", "--field", "body.text", "--id-field", "id"]
    result = runner.invoke(cli, ["-q", *args, "--split-sentences", "--no-mine"])
    assert result.exit_code == 0, result.output
    assert "read 2 records (3 sentences), new 3" in result.output
    result = runner.invoke(cli, ["sources", "--json"])
    (source,) = json.loads(result.stdout)
    assert source["split_sentences"] is True and source["occurrences"] == 3
    assert "(split into sentences)" in runner.invoke(cli, ["sources"]).output
    with bitextdb.open(home) as db:
        assert [(o[3], o[4]) for o in occurrences(db)] == [
            ("7#1", de[0]),
            ("7#2", de[1]),
            ("8#1", de[2]),
        ]

    vectors = tmp_path / "v.npy"
    np.save(vectors, np.ones((2, 8), dtype=np.float32))
    result = runner.invoke(cli, [*args, "--split-sentences", "--embeddings", str(vectors)])
    assert result.exit_code == 2
    assert "cannot go with --split-sentences" in result.output
    result = runner.invoke(cli, args)  # unsplit, the same source
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "ingest it the same way, under another --source, or remove it first" in result.output
    result = runner.invoke(cli, ["sources", "--json"])
    assert json.loads(result.stdout)[0]["occurrences"] == 3


# -- appending in-memory texts -----------------------------------------------------------------
def test_texts_given_twice_to_one_source_add_up(db_url: str, home: Path) -> None:
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1)
    try:
        eye = unit([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        db.ingest_embeddings("de", ["ein apfel", "ein brot"], eye[:2], mine=False)
        db.ingest_embeddings("de", ["ein haus", "eine katze"], eye[2:], mine=False)
        # the second call's vectors are its own rows, though its texts come later
        en = ["a cat", "a house", "an apple", "a bread"]
        db.ingest_embeddings("en", en, eye[[3, 2, 0, 1]], source="en-vectors")
        assert sorted((r["src"], r["tgt"]) for r in iter_records(db, "de-en", min_score=-1)) == [
            ("ein apfel", "an apple"),
            ("ein brot", "a bread"),
            ("ein haus", "a house"),
            ("eine katze", "a cat"),
        ]
        assert [o[1:] for o in occurrences(db) if o[0] == "embeddings"][:4] == [
            (0, 0, None, "ein apfel"),
            (1, 0, None, "ein brot"),
            (2, 0, None, "ein haus"),
            (3, 0, None, "eine katze"),
        ]
        with pytest.raises(InputError, match="cannot be split"):
            db._ingestor().ingest_texts(
                "de", ["x y"], source="s", rows=eye[:1], split_sentences=True
            )
        # a removal then takes every sentence the source ever brought
        assert db.remove("de", ["embeddings"])["sentences_removed"] == 4
        assert "de" not in db.stats()["languages"]
    finally:
        db.close()


def test_http_ingest_appends_and_splits(home: Path, static_model: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from bitextdb.serve import create_app

    with bitextdb.init(home, model=str(static_model)) as db:
        client = TestClient(create_app(db, api_key=None))
        for chunk in (EN[:2], EN[2:4]):
            response = client.post(
                "/ingest", json={"lang": "en", "sentences": chunk, "mine": False}
            )
            assert response.status_code == 200, response.text
        body = {"lang": "en", "sentences": [" ".join(EN[4:])], "source": "doc"}
        response = client.post("/ingest", json={**body, "split_sentences": True, "mine": False})
        assert response.json()["ingested"][0]["sentences"] == 2
        listed = {s["name"]: s for s in client.get("/sources", params={"lang": "en"}).json()}
        assert (listed["api"]["occurrences"], listed["api"]["records"]) == (4, 4)
        assert (listed["doc"]["occurrences"], listed["doc"]["split_sentences"]) == (2, True)
        refused = client.post("/ingest", json={**body, "mine": False})
        assert refused.status_code == 400 and "split-sentences" in refused.json()["error"]


# -- schema ------------------------------------------------------------------------------------
def test_migration_numbers_parts_and_keeps_occurrences(db_url: str, home: Path) -> None:
    database = database_at(
        db_url,
        "0003",
        "INSERT INTO sources (id, lang, name, records, created_at, updated_at) "
        "VALUES (1, 'en', 'old', 2, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        "INSERT INTO sentences (id, lang, text, text_hash, indexed, created_at) VALUES "
        "(1, 'en', 'one', 'h1', true, '2026-01-01 00:00:00'), "
        "(2, 'en', 'two', 'h2', true, '2026-01-01 00:00:00')",
        "INSERT INTO occurrences (source_id, position, sentence_id, ext_id) "
        "VALUES (1, 0, 1, 'a'), (1, 1, 2, NULL)",
    )
    database.upgrade()  # SQLite once lost every occurrence here (a copy of sources)
    assert database.current_revision() == database.head_revision()
    key = inspect(database.engine).get_pk_constraint("occurrences")["constrained_columns"]
    assert key == ["source_id", "position", "part"]
    with database.engine.connect() as conn:
        assert conn.execute(
            text("SELECT position, part, sentence_id, ext_id FROM occurrences ORDER BY position")
        ).all() == [(0, 0, 1, "a"), (1, 0, 2, None)]
        assert conn.execute(text("SELECT split_sentences FROM sources")).scalar_one() in (
            False,
            0,
        )
    assert model_differences(database) == []
    # and back: the old key again, first parts kept
    migrate(
        database,
        "0003",
        "INSERT INTO occurrences (source_id, position, part, sentence_id) VALUES (1, 1, 1, 1)",
        down=True,
    )
    key = inspect(database.engine).get_pk_constraint("occurrences")["constrained_columns"]
    assert key == ["source_id", "position"]
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM occurrences")).scalar_one() == 2
    database.dispose()


def test_an_interrupted_split_ingest_resumes_to_the_same_state(
    home: Path, static_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bitextdb.ingest as ingest

    paragraphs = tmp_path / "en.txt"
    paragraphs.write_text(
        ("\n".join(" ".join(EN[i : i + 3]) for i in range(0, len(EN), 3)) + "\n") * 3,
        encoding="utf-8",
    )
    with bitextdb.init(tmp_path / "whole", model=str(static_model)) as whole:
        whole.ingest(paragraphs, "en", split_sentences=True, source="p")
        expected = occurrences(whole)

    monkeypatch.setattr(ingest, "BATCH", 4)  # several batches, one committed before the stop
    original = ingest.Ingestor._mark_indexed
    calls = []

    def stop_on_the_second(self, ids, in_flight=None):  # type: ignore[no-untyped-def]
        calls.append(len(ids))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, ids, in_flight)

    with bitextdb.init(home, model=str(static_model)) as db:
        monkeypatch.setattr(ingest.Ingestor, "_mark_indexed", stop_on_the_second)
        with pytest.raises(KeyboardInterrupt):
            db.ingest(paragraphs, "en", split_sentences=True, source="p")
        assert not db.check().ok  # sentences stored without their vectors marked
        monkeypatch.setattr(ingest.Ingestor, "_mark_indexed", original)
        again = db.ingest(paragraphs, "en", split_sentences=True, source="p")["ingested"][0]
        assert again["new"] == 0
        assert occurrences(db) == expected
        assert db.check().ok


# -- sentences no source holds -----------------------------------------------------------------
def fruit_file(db: bitextdb.BitextDB, tmp_path: Path, eye: np.ndarray) -> tuple[Path, Path]:
    """Ingest en.txt ("an apple", "a bread", with the vectors ``eye[:2]``) as the source
    "file"; returns the file and its vectors' file."""
    path, npy = tmp_path / "en.txt", tmp_path / "en.npy"
    path.write_text("an apple\na bread\n", encoding="utf-8")
    np.save(npy, eye[:2])
    db.ingest(path, "en", embeddings=npy, source="file")
    return path, npy


def test_check_finds_sentences_no_source_holds_and_repair_lists_them(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1)
    try:
        eye = unit(np.eye(4).tolist())
        fruit_file(db, tmp_path, eye)
        db.ingest_embeddings("de", ["ein apfel", "ein brot"], eye[:2])
        assert db.check().ok
        # as texts given twice to one source before 2026-11-28 left them (the second call
        # took the first one's positions): a sentence whose occurrence is gone
        with db.db.session() as s:
            s.execute(
                text(
                    "DELETE FROM occurrences WHERE position = 1 AND source_id = "
                    "(SELECT id FROM sources WHERE name = 'file')"
                )
            )
        report = db.check()
        assert not report.ok and report.languages["en"]["without_source"] == 1
        assert report.languages["de"]["without_source"] == 0
        pairs_before = sorted(
            (r["src"], r["tgt"]) for r in iter_records(db, "de-en", min_score=-np.inf)
        )
        assert pairs_before == [("ein apfel", "an apple"), ("ein brot", "a bread")]

        repaired = db.check(repair=True)
        assert repaired.ok and repaired.repaired["sentences_attributed"] == 1
        listed = {s["name"]: s["sentences"] for s in db.sources("en")}
        assert listed == {"file": 1, "(unattributed)": 1}
        # nothing else moved, and the sentence can now be taken out
        assert (
            sorted((r["src"], r["tgt"]) for r in iter_records(db, "de-en", min_score=-np.inf))
            == pairs_before
        )
        assert db.remove("en", ["(unattributed)"])["sentences_removed"] == 1
        assert db.check().ok
        assert [o[4] for o in occurrences(db) if o[0] == "file"] == ["an apple"]
    finally:
        db.close()


def test_concurrent_appenders_get_disjoint_positions(db_url: str, home: Path) -> None:
    """``reserve_positions`` is one UPDATE ... RETURNING: writers appending to one source
    at once (threads here; processes or ``serve`` workers on PostgreSQL) never share a
    position."""
    import threading

    from bitextdb.db import corpus

    db = bitextdb.init(home, db=db_url, model="synthetic", dim=4)
    try:
        with db.db.session(writes=True) as s:
            src = corpus.source_id(s, "en", "shared", None)
        firsts: list[int] = []
        start = threading.Barrier(6)

        def append() -> None:
            start.wait()
            for _ in range(25):
                with db.db.session(writes=True) as s:
                    firsts.append(corpus.reserve_positions(s, src, 3))

        threads = [threading.Thread(target=append) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(firsts) == list(range(0, 6 * 25 * 3, 3))  # disjoint, no gap
        assert db.sources("en")[0]["records"] == 6 * 25 * 3
    finally:
        db.close()
