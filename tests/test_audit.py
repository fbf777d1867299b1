"""``check --deep``: everything mining derived, derived again from the stored lists.

Each kind of damage below is one the plain ``check`` cannot see (it compares SQL with the
vector store and counts waiting work); the deep audit must name it, and ``--repair`` must
leave a state equal to a batch run of the reference algorithm.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import bitextdb
from bitextdb.cli import cli
from tests.test_miner import assert_equals_reference, make_vectors

# one statement each, on a mined en/de home of 30 + 30 sentences (k=3); ``{en}`` is the id
# of an English sentence that holds an accepted pair
DAMAGE = {
    "accepted_pair_deleted": (
        "DELETE FROM pairs WHERE src_id = {de} AND tgt_id = {en}",
        {"pairs_missing", "selection_wrong"},
    ),
    "margin_changed": (
        "UPDATE pairs SET margin = margin * 2 WHERE src_id = {de} AND tgt_id = {en}",
        {"pairs_wrong"},
    ),
    "acceptance_flipped": (
        "UPDATE pairs SET accepted = NOT accepted WHERE src_id = {de} AND tgt_id = {en}",
        {"selection_wrong"},
    ),
    "extra_candidate": (
        "INSERT INTO pairs (src_id, tgt_id, src_lang, tgt_lang, cosine, margin, src_r, tgt_r,"
        " forward, backward, accepted, updated_at) SELECT {de}, id, 'de', 'en', 0.5, 9.0,"
        " 0.5, 0.5, TRUE, FALSE, FALSE, CURRENT_TIMESTAMP FROM sentences WHERE lang = 'en'"
        " AND id <> {en} AND NOT EXISTS (SELECT 1 FROM pairs WHERE src_id = {de} AND"
        " tgt_id = sentences.id) AND id = (SELECT MIN(id) FROM sentences WHERE lang = 'en'"
        " AND id <> {en})",
        {"pairs_extra"},
    ),
    "mean_changed": (
        "UPDATE knn SET r = r + 0.25 WHERE sentence_id = {en} AND other_lang = 'de'",
        {"lists_wrong"},
    ),
    "candidate_changed": (
        "UPDATE knn SET best_margin = best_margin + 1 WHERE sentence_id = {en}"
        " AND other_lang = 'de'",
        {"candidates_wrong"},
    ),
    "entry_deleted": (
        "DELETE FROM neighbours WHERE sentence_id = {en} AND other_lang = 'de' AND rank = 0",
        {"lists_wrong"},
    ),
    # size, order, mean and k-th entry hold: the entry's cosine is not its vectors'
    "entry_points_elsewhere": (
        "UPDATE neighbours SET neighbour_id = (SELECT MAX(id) FROM sentences WHERE lang = 'de'"
        " AND id NOT IN (SELECT neighbour_id FROM neighbours WHERE sentence_id = {en}"
        " AND other_lang = 'de')) WHERE sentence_id = {en} AND other_lang = 'de' AND rank = 0",
        {"lists_wrong"},
    ),
    # the mean follows the changed cosine: only the vectors tell (and the list is not sampled)
    "entry_cosine_and_mean_changed": (
        "UPDATE neighbours SET cosine = cosine + 0.05 WHERE sentence_id = {en}"
        " AND other_lang = 'de' AND rank = 0; UPDATE knn SET r = r + 0.05 / 3"
        " WHERE sentence_id = {en} AND other_lang = 'de'",
        {"lists_wrong"},
    ),
    "entry_named_twice": (
        "UPDATE neighbours SET neighbour_id = (SELECT neighbour_id FROM neighbours WHERE"
        " sentence_id = {en} AND other_lang = 'de' AND rank = 0) WHERE sentence_id = {en}"
        " AND other_lang = 'de' AND rank = 1",
        {"lists_wrong"},
    ),
    "entry_ranked_below_zero": (
        "UPDATE neighbours SET rank = -1 WHERE sentence_id = {en} AND other_lang = 'de'"
        " AND rank = 2",
        {"lists_wrong"},
    ),
    "entry_cosine_changed": (
        "UPDATE neighbours SET cosine = cosine - 0.5 WHERE sentence_id = {en}"
        " AND other_lang = 'de' AND rank = 0",
        {"lists_wrong"},
    ),
}
COUNTS = (
    "lists_wrong",
    "candidates_wrong",
    "pairs_missing",
    "pairs_extra",
    "pairs_wrong",
    "selection_wrong",
)


def _mined_home(home: Path, db_url: str) -> bitextdb.BitextDB:
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=3)
    db.ingest_embeddings("en", [f"en {i}" for i in range(30)], make_vectors(30, 8, 1, 7))
    de = make_vectors(30, 8, 1, 0) + 0.05 * make_vectors(30, 8, 2, 0)
    de /= np.linalg.norm(de, axis=1)[:, None]
    db.ingest_embeddings("de", [f"de {i}" for i in range(30)], de)
    return db


def _an_accepted_pair(db: bitextdb.BitextDB) -> dict[str, int]:
    with db.db.session() as s:
        de, en = s.execute(
            sa.text("SELECT src_id, tgt_id FROM pairs WHERE accepted ORDER BY margin DESC")
        ).first()
    return {"de": de, "en": en}


def test_a_mined_home_derives_again_to_what_it_stores(home: Path, db_url: str) -> None:
    with _mined_home(home, db_url) as db:
        db.ingest_embeddings("en", ["en late"], make_vectors(1, 8, 9, 0), source="late")
        _assert_derives_again(db, lists=61)
        db.remove("en", ["late"])
        _assert_derives_again(db, lists=60)


def _assert_derives_again(db: bitextdb.BitextDB, lists: int) -> None:
    report = db.check(deep=True)
    assert report.ok, report.as_dict()
    (pair,) = report.deep or []
    assert pair["pair"] == "de-en" and not pair["pending"] and pair["problems"] == 0
    assert pair["lists"] == lists and pair["pairs"] > 0


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_deep_check_names_the_damage_and_repair_undoes_it(
    damage: str, home: Path, db_url: str
) -> None:
    statement, named = DAMAGE[damage]
    with _mined_home(home, db_url) as db:
        ids = _an_accepted_pair(db)
        with db.db.session() as s:
            for one in statement.format(**ids).split("; "):
                assert s.execute(sa.text(one)).rowcount == 1
        assert db.check().ok, "the plain check cannot see this damage"
        report = db.check(deep=True, sample=0)  # what the lists and vectors tell alone
        assert not report.ok
        (pair,) = report.deep or []
        assert {name for name in COUNTS if pair[name]} >= named, pair
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert_equals_reference(db, "de", "en")


def test_pending_work_is_not_compared(home: Path, db_url: str) -> None:
    with _mined_home(home, db_url) as db:
        db.ingest_embeddings("de", ["de new"], make_vectors(1, 8, 5, 0), mine=False)
        report = db.check(deep=True)
        (pair,) = report.deep or []
        assert pair["pending"] and pair["problems"] == 0 and not report.ok
        assert db.check(repair=True, deep=True).ok


def test_check_deep_on_the_command_line(home: Path, db_url: str) -> None:
    with _mined_home(home, db_url) as db:
        ids = _an_accepted_pair(db)
        with db.db.session() as s:
            s.execute(sa.text(DAMAGE["accepted_pair_deleted"][0].format(**ids)))
    runner = CliRunner()
    base = ["--home", str(home), "--db", db_url, "check"]
    assert runner.invoke(cli, base).exit_code == 0
    found = runner.invoke(cli, [*base, "--deep"])
    assert found.exit_code == 1 and "de-en: 60 lists" in found.output
    assert "1 pairs missing" in found.output and "NOT consistent" in found.output
    fixed = runner.invoke(cli, [*base, "--deep", "--repair", "--json"])
    assert fixed.exit_code == 0, fixed.output
    data = json.loads(fixed.output)
    assert data["ok"] and data["deep"][0]["problems"] == 0


def test_lists_searched_by_hnsw_are_compared_but_their_gap_is_no_fault(
    home: Path, db_url: str
) -> None:
    """Above ``exact_limit`` lists come from HNSW: a list that differs from the exact search
    is the index's recall, reported, not repaired."""
    with _mined_home(home, db_url) as db:
        db.configure(exact_limit=10)
        db.ingest_embeddings("en", ["en late"], make_vectors(1, 8, 9, 0), source="late")
        report = db.check(deep=True, sample=7)
        (pair,) = report.deep or []
        assert pair["approximate"] and pair["sampled"] == 14 and report.ok, pair


@pytest.mark.parametrize(
    "statement",
    [
        # a pair row under the languages the other way round: never seen as de-en again,
        # and a repair once left it there and changed the accepted pairs
        "UPDATE pairs SET src_lang = 'en', tgt_lang = 'de' WHERE src_id = {de} AND tgt_id = {en}",
        # a list filed under another language than its sentence's: repair crashed on it
        "UPDATE knn SET lang = 'es' WHERE sentence_id = {en} AND other_lang = 'de'",
        # a list entry naming a sentence of the list's own language
        "UPDATE neighbours SET neighbour_id = {de} WHERE sentence_id = {de} AND rank = 1",
    ],
)
def test_rows_of_the_wrong_languages_are_stray_and_repair_deletes_them(
    statement: str, home: Path, db_url: str
) -> None:
    with _mined_home(home, db_url) as db:
        with db.db.session() as s:
            assert s.execute(sa.text(statement.format(**_an_accepted_pair(db)))).rowcount == 1
        report = db.check()
        assert report.stray_rows >= 1 and not report.ok
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert_equals_reference(db, "de", "en")


def test_a_list_true_to_its_vectors_but_not_the_nearest_is_found_by_searching_again(
    home: Path, db_url: str
) -> None:
    """Its last entry swapped for a farther sentence, with that sentence's true cosine and
    the list's mean and k-th entry to match: only an exact search of the list finds it."""
    with _mined_home(home, db_url) as db:
        en = _an_accepted_pair(db)["en"]
        with db.db.session() as s:
            listed = s.execute(
                sa.text(
                    "SELECT neighbour_id, cosine FROM neighbours WHERE sentence_id = :en"
                    " AND other_lang = 'de' ORDER BY rank"
                ),
                {"en": en},
            ).all()
            de_ids = s.execute(sa.text("SELECT id FROM sentences WHERE lang = 'de'")).scalars()
            farther = sorted(set(de_ids) - {n for n, _ in listed})
        _, (xv,) = db.index.retrieve("en", np.array([en]))
        ids, vectors = db.index.retrieve("de", np.array(farther))
        cos = vectors.astype(np.float64) @ xv.astype(np.float64)
        far_id, far_cos = int(ids[np.argmin(cos)]), float(cos.min())
        entries = [*listed[:-1], (far_id, far_cos)]
        with db.db.session() as s:
            s.execute(
                sa.text(
                    "UPDATE neighbours SET neighbour_id = :n, cosine = :c WHERE sentence_id = :en"
                    " AND other_lang = 'de' AND rank = :rank"
                ),
                {"n": far_id, "c": far_cos, "en": en, "rank": len(listed) - 1},
            )
            s.execute(
                sa.text(
                    "UPDATE knn SET r = :r, kth_cos = :c, kth_id = :n WHERE sentence_id = :en"
                    " AND other_lang = 'de'"
                ),
                {"r": float(np.mean([c for _, c in entries])), "c": far_cos, "n": far_id, "en": en},
            )
        unsampled = db.check(deep=True, sample=0)
        (pair,) = unsampled.deep or []
        assert pair["lists_wrong"] == 0, "true to its vectors: no other check sees it"
        report = db.check(deep=True)
        (pair,) = report.deep or []
        assert pair["sampled_differ"] == 1 and not report.ok, pair
        assert db.check(repair=True, deep=True).ok
        assert_equals_reference(db, "de", "en")


def test_work_waiting_in_a_pair_no_longer_mined_blocks_nothing(home: Path, db_url: str) -> None:
    """A dirty flag left in a pair that ``config --pairs`` then left out made every pair
    'pending' and ``check`` fail for good: nothing mines that pair any more."""
    with _mined_home(home, db_url) as db:
        db.ingest_embeddings("es", [f"es {i}" for i in range(5)], make_vectors(5, 8, 6, 0))
        with db.db.session() as s:
            s.execute(
                sa.text("UPDATE knn SET dirty = TRUE WHERE lang = 'de' AND other_lang = 'en'")
            )
        db.configure(pairs=["en-es"])
        report = db.check(deep=True)
        assert report.ok and report.dirty_candidates == 0, report.as_dict()
        (pair,) = report.deep or []
        assert pair["pair"] == "en-es" and not pair["pending"]


@pytest.mark.postgres
def test_codes_that_a_collation_sorts_otherwise_are_no_stray_rows(
    postgres_base: str, home: Path
) -> None:
    """``check`` once called a pair row stray when ``src_lang >= tgt_lang`` in SQL: under
    an ICU collation 'zh-Hant' sorts after 'zh-cmn', though pairs go by code points, so a
    healthy home was 'NOT consistent' and every repair deleted and re-mined the pair."""
    name = f"bitextdb_icu_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            try:
                conn.execute(
                    sa.text(
                        f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu "
                        "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                    )
                )
            except sa.exc.DBAPIError as exc:  # no right to, or a server without ICU
                pytest.skip(f"cannot make an ICU database here: {exc.orig}")
        url = sa.engine.make_url(postgres_base).set(database=name).render_as_string(False)
        with bitextdb.init(home, db=url, model="synthetic", dim=8, k=2) as db:
            with db.db.session() as s:
                assert s.execute(sa.text("SELECT 'zh-Hant' < 'zh-cmn'")).scalar() is False
            db.ingest_embeddings("zh-Hant", [f"h {i}" for i in range(6)], make_vectors(6, 8, 1, 0))
            db.ingest_embeddings("zh-cmn", [f"c {i}" for i in range(6)], make_vectors(6, 8, 1, 0))
            report = db.check(deep=True)
            assert report.ok and report.stray_rows == 0, report.as_dict()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_lists_mined_from_other_vectors_are_repaired_in_one_pass(home: Path, db_url: str) -> None:
    """Lists, candidates and flags that agree with each other but not with the vectors
    (mined from vectors since replaced: a store damaged, then restored): a list mined again
    is mined as new, so the flag its old candidate had set was left, and one repair gave
    extra candidates that only a second repair cleared."""
    with _mined_home(home, db_url) as db:
        ids, _ = db.index.retrieve("de", np.sort(np.array(_ids(db, "de"))))
        other = make_vectors(len(ids), 8, 3, 0)
        db.index.upsert("de", ids, other / np.linalg.norm(other, axis=1)[:, None])
        report = db.check(deep=True, sample=0)
        (pair,) = report.deep or []
        assert pair["lists_wrong"] > 0 and not report.ok
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert_equals_reference(db, "de", "en")


def _ids(db: bitextdb.BitextDB, lang: str) -> list[int]:
    with db.db.session() as s:
        rows = s.execute(sa.text("SELECT id FROM sentences WHERE lang = :l"), {"l": lang})
        return [int(i) for i in rows.scalars()]
