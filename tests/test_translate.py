"""Translations of sentences (library ``translate`` and ``bitextdb translate``).

The database is built with the static cross-lingual test model, whose word-for-word
translations embed identically: 40 English sentences, their German translations and 20
German sentences without an English side, ingested in shuffled order. The planted
translation must come first for sentences in the database and for new sentences alike.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sentence_transformers import SentenceTransformer
from sqlalchemy import text

import bitextdb
from bitextdb.cli import cli
from tests.models import random_sentences, translate

N_PLANTED = 40
N_EXTRA = 20
N_QUERIES = 20


@dataclass(frozen=True)
class Corpus:
    home: Path
    en: list[str]  #: English sentences in the database
    de: list[str]  #: de[i] is the German translation of en[i], also in the database
    extra_de: list[str]  #: German sentences whose English side is not in the database
    extra_en: list[str]  #: extra_en[i] translates extra_de[i]; never ingested


@pytest.fixture(scope="module")
def corpus(static_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """The database, built once and closed (each test opens it: the CLI needs the home free)."""
    home = tmp_path_factory.mktemp("translate") / "home"
    english = random_sentences(N_PLANTED + N_EXTRA, seed=11)  # distinct bags of words
    german = [translate(s, "de") for s in english]
    c = Corpus(
        home,
        english[:N_PLANTED],
        german[:N_PLANTED],
        german[N_PLANTED:],
        english[N_PLANTED:],
    )
    shuffled = c.de + c.extra_de
    random.Random(5).shuffle(shuffled)
    with pytest.MonkeyPatch.context() as mp:  # the caller's BITEXTDB_* must not leak in
        for name in list(os.environ):
            if name.startswith("BITEXTDB_"):
                mp.delenv(name)
        db = bitextdb.init(home, model=str(static_model))
        try:
            db.ingest_texts("en", c.en)
            db.ingest_texts("de", shuffled)
        finally:
            db.close()
    yield c


@pytest.fixture
def db(corpus: Corpus) -> Iterator[bitextdb.BitextDB]:
    handle = bitextdb.open(corpus.home)
    try:
        yield handle
    finally:
        handle.close()


def ids_of(db: bitextdb.BitextDB, lang: str) -> dict[str, int]:
    with db.db.session() as s:
        rows = s.execute(text("SELECT text, id FROM sentences WHERE lang = :l"), {"l": lang})
        return {t: int(i) for t, i in rows}


def pair_rows(db: bitextdb.BitextDB) -> dict[tuple[int, int], bool]:
    """``(de id, en id) -> accepted`` for every candidate pair (stored as de-en)."""
    with db.db.session() as s:
        rows = s.execute(
            text("SELECT src_id, tgt_id, accepted FROM pairs WHERE src_lang = 'de'")
        ).all()
    return {(int(a), int(b)): bool(acc) for a, b, acc in rows}


# -- library -----------------------------------------------------------------------------------
def test_planted_translation_first_for_stored_sentences(
    db: bitextdb.BitextDB, corpus: Corpus
) -> None:
    en_ids, de_ids = ids_of(db, "en"), ids_of(db, "de")
    pairs = pair_rows(db)
    assert sum(pairs.values()) >= N_PLANTED  # the planted pairs were all accepted
    queries = corpus.en[:N_QUERIES]
    results = db.translate_many(queries, "en", "de", top=5)
    assert len(results) == N_QUERIES
    for query, want, t in zip(queries, corpus.de, results):
        assert (t.query, t.src_lang, t.tgt_lang) == (query, "en", "de")
        assert t.sentence_id == en_ids[query]
        assert len(t.hits) == 5
        assert t.hits[0].text == want and t.hits[0].id == de_ids[want]
        assert t.hits[0].accepted and t.hits[0].mined
        margins = [h.margin for h in t.hits]
        assert all(m is not None for m in margins)
        assert margins == sorted(margins, reverse=True)
        assert t.hits[0].margin > t.hits[1].margin  # a clear winner, not a tie
        for h in t.hits:  # marks are exactly the stored pairs of (hit, query)
            key = (h.id, t.sentence_id)
            assert h.mined == (key in pairs)
            assert h.accepted == pairs.get(key, False)
        # the stored pair (stored as de-en), as asked: the query's side first
        p = t.stored_pair
        assert p is not None
        assert (p["src_lang"], p["tgt_lang"], p["src"], p["tgt"]) == ("en", "de", query, want)
        assert (p["src_id"], p["tgt_id"]) == (en_ids[query], de_ids[want])
        assert p["accepted"] and p["margin"] == pytest.approx(t.hits[0].margin)

    # and the other way round
    back = db.translate_many(corpus.de[N_QUERIES:], "de", "en", top=3)
    for want, t in zip(corpus.en[N_QUERIES:], back):
        assert t.hits[0].text == want and t.hits[0].accepted
        assert t.stored_pair is not None and t.stored_pair["tgt"] == want


def test_the_stored_pair_is_of_the_languages_asked_for(static_model: Path, tmp_path: Path) -> None:
    """A sentence paired in two language pairs shows the pair of the target asked for."""
    english = random_sentences(6, seed=3)
    with bitextdb.init(tmp_path / "home", model=str(static_model)) as db:
        db.ingest_texts("en", english)
        for lang in ("de", "es"):
            db.ingest_texts(lang, [translate(s, lang) for s in english])
        for lang in ("de", "es"):
            for query, t in zip(english, db.translate_many(english, "en", lang, top=1)):
                p = t.stored_pair
                assert p is not None and {p["src_lang"], p["tgt_lang"]} == {"en", lang}
                assert {p["src"], p["tgt"]} == {query, translate(query, lang)}


def test_vectors_lost_from_the_store_are_said_so(static_model: Path, tmp_path: Path) -> None:
    english = random_sentences(4, seed=4)
    home = tmp_path / "home"
    with bitextdb.init(home, model=str(static_model)) as db:
        db.ingest_texts("en", english)
        db.ingest_texts("de", [translate(s, "de") for s in english])
    shutil.rmtree(home / "vectors" / "de")  # the store's folder of one language, gone
    with bitextdb.open(home) as db:
        with pytest.raises(bitextdb.InputError, match="run `bitextdb check --repair`"):
            db.translate_many(english[:1], "en", "de")
        assert db.check(repair=True).ok
        (found,) = db.translate_many(english[:1], "en", "de", top=1)
        assert found.hits[0].text == translate(english[0], "de")
        with pytest.raises(bitextdb.InputError, match="There are no fr sentences"):
            db.translate_many(english[:1], "en", "fr")


def test_planted_translation_first_for_new_sentences(db: bitextdb.BitextDB, corpus: Corpus) -> None:
    en_ids, de_ids = ids_of(db, "en"), ids_of(db, "de")
    # English sides of German sentences that have none in the database
    assert not set(corpus.extra_en) & set(en_ids)
    results = db.translate_many(corpus.extra_en, "en", "de", top=5)
    for query, want, t in zip(corpus.extra_en, corpus.extra_de, results):
        assert t.query == query and t.sentence_id is None and t.stored_pair is None
        assert t.hits[0].text == want and t.hits[0].id == de_ids[want]
        assert t.hits[0].cosine == pytest.approx(1.0, abs=1e-5)
        assert t.hits[0].margin > t.hits[1].margin
        assert not any(h.accepted or h.mined for h in t.hits)  # the query is in no pair

    # new word orders of stored sentences: the same words, a text the database lacks
    reordered = [(" ".join(s.split()[::-1]), d) for s, d in zip(corpus.en, corpus.de)]
    reordered = [(q, d) for q, d in reordered if q not in en_ids][:N_QUERIES]
    assert len(reordered) == N_QUERIES
    for (_query, want), t in zip(
        reordered, db.translate_many([q for q, _ in reordered], "en", "de", top=2)
    ):
        assert t.sentence_id is None and t.stored_pair is None
        assert t.hits[0].text == want
        assert not t.hits[0].accepted  # the stored pair belongs to the stored sentence

    one = db.translate(corpus.extra_en[0], "en", "de", top=5)
    assert one.as_dict() == results[0].as_dict()


def test_margins_agree_with_a_hand_computation(
    db: bitextdb.BitextDB, corpus: Corpus, static_model: Path
) -> None:
    k = db.settings.k
    model = SentenceTransformer(str(static_model), device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True).astype(np.float64)

    en_ids, de_ids = ids_of(db, "en"), ids_of(db, "de")
    de_texts, en_texts = list(de_ids), list(en_ids)
    de_vecs, en_vecs = encode(de_texts), encode(en_texts)
    with db.db.session() as s:
        stored_r = {
            int(i): float(r)
            for i, r in s.execute(text("SELECT sentence_id, r FROM knn WHERE other_lang = 'en'"))
        }
    queries = [corpus.en[0], corpus.en[7], corpus.extra_en[0], corpus.extra_en[3]]
    results = db.translate_many(queries, "en", "de", top=6)
    for query, t in zip(queries, results):
        cos = de_vecs @ encode([query])[0]
        r_q = float(np.sort(cos)[::-1][:k].mean())
        assert t.r == pytest.approx(r_q, abs=1e-5)
        for h in t.hits:
            row = de_texts.index(h.text)
            assert de_ids[h.text] == h.id
            # the stored r of the hit is its mean top-k cosine towards English
            r_y = stored_r[h.id]
            assert r_y == pytest.approx(np.sort(en_vecs @ de_vecs[row])[::-1][:k].mean(), abs=1e-5)
            assert h.cosine == pytest.approx(cos[row], abs=1e-5)
            assert h.margin == pytest.approx(cos[row] / ((r_q + r_y) / 2), abs=1e-5)


def test_every_place_of_the_ranking_is_the_margin_ranking_over_all_targets(
    db: bitextdb.BitextDB, corpus: Corpus, static_model: Path
) -> None:
    """The pool of hits nearest by cosine grows until nothing outside it can outscore the
    last place asked for: a sentence with a low cosine but a low r(y) was left out."""
    k = db.settings.k
    model = SentenceTransformer(str(static_model), device="cpu")
    de_ids = ids_of(db, "de")
    de_texts = list(de_ids)
    de_vecs = model.encode(de_texts, normalize_embeddings=True).astype(np.float64)
    with db.db.session() as s:
        stored_r = {
            int(i): float(r)
            for i, r in s.execute(text("SELECT sentence_id, r FROM knn WHERE other_lang = 'en'"))
        }
    queries = [corpus.en[3], corpus.extra_en[5], "the old dog and the child"]
    vecs = model.encode(queries, normalize_embeddings=True).astype(np.float64)
    for top in (1, 5, 30, len(de_texts)):
        for vec, t in zip(vecs, db.translate_many(queries, "en", "de", top=top)):
            cos = de_vecs @ vec
            r_q = float(np.sort(cos)[::-1][:k].mean())
            margins = np.array(
                [c / ((r_q + stored_r[de_ids[x]]) / 2) for c, x in zip(cos, de_texts)]
            )
            expected = np.sort(margins)[::-1][:top]
            assert len(t.hits) == min(top, len(de_texts))
            assert [h.margin for h in t.hits] == pytest.approx(expected.tolist(), abs=1e-6)


def test_a_top_beyond_the_pool_of_4096_is_still_the_best_of_all(tmp_path: Path) -> None:
    """The pool stopped at 4,096 targets, settled or not: a --top of 4,000 over 20,000
    targets missed 79 of the best 4,000 margins. It now grows to four times the top."""
    from tests.test_miner import make_vectors

    top, k, n = 4000, 4, 20_000
    with bitextdb.init(tmp_path / "home", model="given", dim=8, k=k) as db:
        sources = make_vectors(40, 8, 1, 0)
        db.ingest_embeddings("xa", [f"a{i}" for i in range(40)], sources)
        targets = make_vectors(n, 8, 2, 0)
        db.ingest_embeddings("xb", [f"b{i}" for i in range(n)], targets)
        with db.db.session() as s:
            r_of = dict(s.execute(text("SELECT sentence_id, r FROM knn WHERE lang = 'xb'")).all())
            ids = dict(s.execute(text("SELECT text, id FROM sentences WHERE lang = 'xb'")).all())
        r = np.array([r_of[ids[f"b{i}"]] for i in range(n)], dtype=np.float64)
        cos = targets.astype(np.float64) @ sources[0].astype(np.float64)  # a0, stored
        r_q = float(np.sort(cos)[::-1][:k].mean())
        expected = np.sort(cos / ((r_q + r) / 2))[::-1][:top]
        hits = db.translate("a0", "xa", "xb", top=top).hits
        assert [h.margin for h in hits] == pytest.approx(expected.tolist(), abs=1e-6)


def test_a_far_target_with_a_lonely_neighbourhood_is_not_left_out(tmp_path: Path) -> None:
    """30 targets at cosine 0.71 crowded by source sentences, and one at 0.6 with none near
    it: its margin is the best, though 30 hits come before it by cosine."""
    rng = np.random.default_rng(1)

    def unit(rows: np.ndarray) -> np.ndarray:
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    e = np.eye(8)
    crowd = unit(e[0] + e[1] + 0.05 * rng.standard_normal((30, 8)))
    lonely = unit((0.6 * e[0] + 0.8 * e[2])[None])
    sources = unit(e[1] + 0.05 * rng.standard_normal((30, 8)))
    with bitextdb.init(tmp_path / "home", model="given", dim=8, k=4) as db:
        db.ingest_embeddings(
            "xa", ["query", *[f"s{i}" for i in range(30)]], unit(np.vstack([e[0], sources]))
        )
        db.ingest_embeddings(
            "xb", [*[f"t{i}" for i in range(30)], "lonely"], np.vstack([crowd, lonely])
        )
        for top in (1, 3):
            hits = db.translate("query", "xa", "xb", top=top).hits
            assert hits[0].text == "lonely" and hits[0].cosine == pytest.approx(0.6, abs=1e-6)
            assert len(hits) == top


def test_the_r_floor_is_a_lower_bound_of_every_stored_r(corpus: Corpus, tmp_path: Path) -> None:
    """translate reads one kept number instead of scanning every list for the lowest r."""
    from bitextdb.db import graph

    home = tmp_path / "copy"
    shutil.copytree(corpus.home, home)

    def lowest(db: bitextdb.BitextDB) -> tuple[float | None, float]:
        with db.db.session() as s:
            sql = "SELECT min(r) FROM knn WHERE lang = 'de' AND other_lang = 'en' AND size > 0"
            return graph.r_floor(s, "de", "en"), float(s.execute(text(sql)).scalar_one())

    with bitextdb.open(home) as db:
        kept, actual = lowest(db)
        assert kept == pytest.approx(actual)
        db.ingest_texts("en", corpus.extra_en)  # German lists gain members: r rises
        kept, actual = lowest(db)
        assert kept is not None and kept <= actual + 1e-12
        with db.db.session() as s:  # a database older than the note: scanned
            s.execute(text("DELETE FROM settings WHERE key LIKE 'r_floor:%'"))
        assert lowest(db)[0] == pytest.approx(actual)


def test_a_target_not_mined_yet_is_ranked_by_the_margin_mining_would_give(
    corpus: Corpus, tmp_path: Path
) -> None:
    home = tmp_path / "copy"
    shutil.copytree(corpus.home, home)
    english = corpus.extra_en[2]
    with bitextdb.open(home) as db:
        db.ingest_texts("en", [english], mine=False)  # an English target, not mined
        before = db.translate(translate(english, "de"), "de", "en", top=3)
        assert before.hits[0].text == english and before.hits[0].margin is not None
        db.mine()
        after = db.translate(translate(english, "de"), "de", "en", top=3)
    assert after.hits[0].text == english
    assert before.hits[0].margin == pytest.approx(after.hits[0].margin, abs=1e-6)


def test_a_pair_left_out_of_mining_is_ranked_by_the_margins_of_now(
    corpus: Corpus, static_model: Path, tmp_path: Path
) -> None:
    """Once `config --pairs` left de-en out, translate ranked with the r values and showed
    the pairs of the last mining before, which later ingests had made old."""
    home = tmp_path / "copy"
    shutil.copytree(corpus.home, home)
    model = SentenceTransformer(str(static_model), device="cpu")
    with bitextdb.open(home) as db:
        k = db.settings.k
        db.configure(pairs=["en-fr"])
        db.ingest_texts("en", corpus.extra_en)  # the German sentences' r towards en rise
        de_texts = list(ids_of(db, "de"))
        en_texts = list(ids_of(db, "en"))
        de_vecs = model.encode(de_texts, normalize_embeddings=True).astype(np.float64)
        en_vecs = model.encode(en_texts, normalize_embeddings=True).astype(np.float64)
        r_de = np.sort(de_vecs @ en_vecs.T, axis=1)[:, ::-1][:, :k].mean(axis=1)
        queries = [corpus.en[3], corpus.extra_en[5]]
        for query, t in zip(queries, db.translate_many(queries, "en", "de", top=5)):
            cos = de_vecs @ model.encode([query], normalize_embeddings=True)[0]
            r_q = float(np.sort(cos)[::-1][:k].mean())
            expected = np.sort(cos / ((r_q + r_de) / 2))[::-1][:5]
            assert [h.margin for h in t.hits] == pytest.approx(expected.tolist(), abs=1e-5)
            # what mining stored for the pair is not shown as if it held now
            assert not any(h.mined or h.accepted for h in t.hits) and t.stored_pair is None


# -- command line ------------------------------------------------------------------------------
def run(corpus: Corpus, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-q", "--home", str(corpus.home), "translate", *args])


def ok(corpus: Corpus, *args: str) -> Result:
    result = run(corpus, *args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def test_cli_text_output_marks_pairs_and_shows_the_stored_pair(corpus: Corpus) -> None:
    query, want = corpus.en[3], corpus.de[3]
    lines = ok(corpus, query, "--from", "en", "--to", "de", "--top", "3").stdout.splitlines()
    assert lines[0].startswith(f"{query}  [en -> de, r=")
    hits = [line for line in lines if line.lstrip()[:3] in ("1. ", "2. ", "3. ")]
    assert len(hits) == 3
    assert hits[0].endswith(f"{want} *pair")
    assert not any("*pair" in line for line in hits[1:])
    assert any(line.strip().startswith(f"stored pair: {query} ||| {want}") for line in lines)

    new = ok(corpus, corpus.extra_en[1], "--from", "en", "--to", "de").stdout
    first = next(line for line in new.splitlines() if line.lstrip().startswith("1. "))
    assert first.endswith(corpus.extra_de[1]) and "stored pair" not in new


def test_cli_json(corpus: Corpus) -> None:
    query, want = corpus.en[5], corpus.de[5]
    data = json.loads(ok(corpus, query, "--from", "en", "--to", "de", "--json").stdout)
    assert data["query"] == query and data["sentence_id"] is not None
    assert len(data["hits"]) == 5
    assert data["hits"][0]["text"] == want and data["hits"][0]["accepted"] is True
    assert set(data["hits"][0]) == {"id", "text", "cosine", "margin", "mined", "accepted"}
    assert data["stored_pair"]["src"] == query and data["stored_pair"]["tgt"] == want


def test_cli_file_prints_tsv(corpus: Corpus, tmp_path: Path) -> None:
    queries = [corpus.en[0], corpus.extra_en[2], corpus.en[9]]
    wants = [corpus.de[0], corpus.extra_de[2], corpus.de[9]]
    path = tmp_path / "queries.txt"
    path.write_text("".join(q + "\n" for q in queries), encoding="utf-8")
    out = ok(corpus, "--file", str(path), "--from", "en", "--to", "de", "--top", "2").stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 2 * len(queries) and all(len(r) == 6 for r in rows)
    assert [(r[0], r[1]) for r in rows] == [(q, str(n)) for q in queries for n in (1, 2)]
    firsts = rows[::2]
    assert [r[4] for r in firsts] == wants
    assert [r[5] for r in firsts] == ["accepted", "", "accepted"]
    for r in rows:
        float(r[2]), float(r[3])  # margin and cosine are numbers
    assert float(firsts[0][2]) > float(rows[1][2])

    data = json.loads(
        ok(corpus, "--file", str(path), "--from", "en", "--to", "de", "--json").stdout
    )
    assert [t["hits"][0]["text"] for t in data] == wants


def test_cli_file_says_which_lines_it_skipped(corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_bytes(f"{corpus.en[0]}\n\n".encode() + b"\xff bad\n" + f"{corpus.en[9]}\n".encode())
    args = ["--home", str(corpus.home), "translate", "--file", str(path), "--from", "en"]
    result = CliRunner().invoke(cli, [*args, "--to", "de", "--json"])
    assert result.exit_code == 0, result.output
    assert [(t["line"], t["query"]) for t in json.loads(result.stdout)] == [
        (1, corpus.en[0]),
        (4, corpus.en[9]),
    ]
    assert f"skipped 2 lines of {path}: 1 empty, 1 invalid utf8" in result.stderr
    path.write_bytes(b"\n \n")
    refused = run(corpus, "--file", str(path), "--from", "en", "--to", "de")
    assert "holds no sentences (2 empty)" in refused.output
    path.write_bytes(b"x\n" + b"long " * 500 + b"\n")  # what TEXT takes, a line takes
    answered = ok(corpus, "--file", str(path), "--from", "en", "--to", "de", "--json")
    assert [t["line"] for t in json.loads(answered.stdout)] == [1, 2]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["the dog", "--from", "en", "--to", "en"], "different languages"),
        (["the dog", "--from", "en", "--to", "fr"], "no fr sentences"),
        (["   ", "--from", "en", "--to", "de"], "empty"),
        (["the dog", "--from", "en", "--to", "de", "--top", "0"], "--top"),
        (["--from", "en", "--to", "de"], "either one TEXT or --file"),
    ],
)
def test_cli_errors_are_one_clean_sentence(corpus: Corpus, args: list[str], needle: str) -> None:
    result = run(corpus, *args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
