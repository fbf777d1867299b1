"""Removing sources: the stored graph then equals the batch reference over what remains."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import bitextdb
from bitextdb.cli import cli
from bitextdb.db import corpus
from bitextdb.errors import BusyError, InputError
from bitextdb.export import iter_records
from tests.reference import random_unit
from tests.test_miner import assert_equals_reference, make_vectors, open_fresh, stored


@st.composite
def removals(draw: st.DrawFn, ties: bool = True) -> dict:
    """Sources of two languages ingested in some order, one or two of them removed on the
    way (and maybe ingested again later). A source may repeat a sentence of another one."""
    n = {lang: draw(st.integers(0, 12)) for lang in ("xa", "xb")}
    sources = []
    for lang in ("xa", "xb"):
        cuts = sorted({c for c in draw(st.lists(st.integers(1, 11), max_size=3)) if c < n[lang]})
        for j, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, n[lang]])):
            if hi > lo:
                shared = j > 0 and draw(st.booleans())  # also holds its language's first sentence
                sources.append((f"{lang}-{j}", lang, lo, hi, shared))
    ops: list[tuple] = [("ingest", src) for src in draw(st.permutations(sources))]
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(1, len(ops))) if ops else 0
        ingested = [op[1] for op in ops[:at] if op[0] == "ingest"]
        removed = {op[1] for op in ops if op[0] == "remove"}
        choices = [src for src in ingested if src not in removed]
        if choices:
            src = draw(st.sampled_from(choices))
            ops.insert(at, ("remove", src))
            if draw(st.booleans()):
                ops.append(("ingest", src))
    return {
        "n": n,
        "k": draw(st.integers(1, 4)),
        "seed": draw(st.integers(0, 10_000)),
        "dup": draw(st.sampled_from([0, 0, 3]) if ties else st.just(0)),
        "ops": ops,
    }


def scenario_vectors(sc: dict) -> dict[str, np.ndarray]:
    """The vectors of both languages of a :func:`removals` scenario."""
    return {
        lang: make_vectors(sc["n"][lang], 8, sc["seed"] + i, sc["dup"])
        for i, lang in enumerate(("xa", "xb"))
    }


def apply(db: bitextdb.BitextDB, op: tuple, vectors: dict[str, np.ndarray]) -> None:
    """Carry out one operation of a :func:`removals` scenario."""
    kind, (name, lang, lo, hi, shared) = op
    if kind == "remove":
        db.remove(lang, name)
    else:
        rows = ([0] if shared else []) + list(range(lo, hi))
        texts = [f"{lang} sentence number {i}" for i in rows]
        db.ingest_embeddings(lang, texts, vectors[lang][rows], source=name)


def run_removals(sc: dict, kind: str, mine_path: str) -> None:
    vectors = scenario_vectors(sc)
    with tempfile.TemporaryDirectory() as tmp:
        db = open_fresh(kind, sc["k"], Path(tmp), mine_path)
        try:
            for op in sc["ops"]:
                apply(db, op, vectors)
                assert_equals_reference(db, "xa", "xb")
            assert db.check().ok
        finally:
            db.close()


@pytest.mark.slow
@pytest.mark.parametrize("mine_path", ["scan", "query"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=removals())
def test_removing_sources_equals_batch_over_the_rest_on_edge(sc: dict, mine_path: str) -> None:
    run_removals(sc, "edge", mine_path)


@pytest.mark.slow
@pytest.mark.parametrize("mine_path", ["scan", "query"])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=removals(ties=False))
def test_removing_sources_equals_batch_over_the_rest_on_server_adapter(
    sc: dict, mine_path: str
) -> None:
    """Without bit-identical vectors, for the reason given in test_miner."""
    run_removals(sc, "server", mine_path)


def _three_sources(db: bitextdb.BitextDB) -> None:
    """xa: a1 (a0..a9) and a2 (a5..a14, sharing a5..a9 with a1); xb: b1 (b0..b11)."""
    a, b = random_unit(15, 8, 1), random_unit(12, 8, 2)
    db.ingest_embeddings("xa", [f"a{i}" for i in range(10)], a[:10], source="a1")
    db.ingest_embeddings("xa", [f"a{i}" for i in range(5, 15)], a[5:], source="a2")
    db.ingest_embeddings("xb", [f"b{i}" for i in range(12)], b, source="b1")


def _texts(db: bitextdb.BitextDB, lang: str) -> set[str]:
    with db.db.session() as s:
        rows = s.execute(text("SELECT text FROM sentences WHERE lang = :l"), {"l": lang})
        return {row[0] for row in rows}


def _accepted_texts(db: bitextdb.BitextDB) -> set[tuple[str, str]]:
    """Every accepted pair, as texts (the export's records, whatever their margin)."""
    return {(r["src"], r["tgt"]) for r in iter_records(db, "xa-xb", min_score=-np.inf)}


@pytest.mark.parametrize("mine_path", ["scan", "query"])
def test_a_sentence_another_source_holds_stays(db_url: str, tmp_path: Path, mine_path: str) -> None:
    home = tmp_path / "home"
    bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=3).close()
    with bitextdb.open(home, mine_path=mine_path) as db:
        _three_sources(db)
        report = db.remove("xa", "a2")
        assert report["sentences_removed"] == 5 and report["sentences_kept"] == 5
        assert report["occurrences"] == 10
        assert [p["pair"] for p in report["pairs"]] == ["xa-xb"]
        assert report["pairs"][0]["changed_lists"] > 0
        assert _texts(db, "xa") == {f"a{i}" for i in range(10)}
        assert [(r["lang"], r["name"], r["sentences"]) for r in db.sources()] == [
            ("xa", "a1", 10),
            ("xb", "b1", 12),
        ]
        for row in db.sources():  # ISO 8601 in UTC on both databases
            assert datetime.fromisoformat(row["created_at"]).utcoffset() == timedelta(0)
        assert_equals_reference(db, "xa", "xb")
        assert db.check().ok
        db.remove("xa", "a1")  # now the shared ones go too
        assert _texts(db, "xa") == set()
        assert db.index.count("xa") == 0
        knn, lists, candidates, accepted = stored(db)
        assert not candidates and not accepted
        assert all(not entries for (_, other), entries in lists.items() if other == "xa")
        assert not [key for key in knn if key[1] == "xa"]  # xb is pending towards xa again
        assert db.check().ok


def test_every_list_that_held_a_removed_sentence_is_searched_again(tmp_path: Path) -> None:
    """The lists of the other language are rewritten exactly where they held a removed
    sentence: a miner that skipped them would leave a dangling neighbour."""
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        with db.db.session() as s:
            a2_only = corpus.sentences_only_in(s, [2])
            held = {
                row[0]
                for row in s.execute(
                    text(
                        "SELECT DISTINCT sentence_id FROM neighbours WHERE other_lang = 'xa' "
                        f"AND neighbour_id IN ({', '.join(map(str, a2_only))})"
                    )
                )
            }
        assert held
        report = db.remove("xa", ["a2"])
        assert report["pairs"][0]["changed_lists"] == len(held)
        _, lists, _, _ = stored(db)
        assert not {n for entries in lists.values() for n, _ in entries} & set(a2_only.tolist())
    finally:
        db.close()


def test_a_source_can_be_ingested_again_after_its_removal(tmp_path: Path) -> None:
    db = open_fresh("edge", 2, tmp_path, "query")
    try:
        _three_sources(db)
        before = _accepted_texts(db)
        db.remove("xa", "a2")
        assert _accepted_texts(db) != before
        a = random_unit(15, 8, 1)
        db.ingest_embeddings("xa", [f"a{i}" for i in range(5, 15)], a[5:], source="a2")
        assert_equals_reference(db, "xa", "xb")
        assert _accepted_texts(db) == before
    finally:
        db.close()


def test_a_dry_run_counts_and_changes_nothing(tmp_path: Path) -> None:
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        before = stored(db)
        report = db.remove("xa", ["a1", "a2"], dry_run=True)
        assert report["sentences_removed"] == 15 and report["sentences_kept"] == 0
        assert report["dry_run"] and report["pairs"] == []
        assert stored(db) == before and len(db.sources()) == 3
        assert db.index.count("xa") == 15
    finally:
        db.close()


def test_an_unknown_source_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        before = stored(db)
        with pytest.raises(InputError, match=r"No source 'nope' in xa \(its sources: 'a1', 'a2'\)"):
            db.remove("xa", ["a1", "nope"])
        with pytest.raises(InputError, match="No source 'b1' in xa"):
            db.remove("xa", "b1")  # another language's source
        with pytest.raises(InputError, match="at least one source"):
            db.remove("xa", [])
        assert stored(db) == before and len(db.sources()) == 3
    finally:
        db.close()


def test_a_sentence_stored_meanwhile_from_another_source_stops_the_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker ingesting one of the sentences from another source between the count
    and the deletion: nothing is removed, and the database is as it was."""
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        before = stored(db)
        counted = corpus.sentences_only_in
        calls = []

        def meanwhile(s, source_ids):  # type: ignore[no-untyped-def]
            calls.append(source_ids)
            if len(calls) == 2:  # the check inside the deleting transaction
                sid = int(counted(s, source_ids)[0])
                s.execute(
                    text(
                        "INSERT INTO occurrences (source_id, position, sentence_id) "
                        "VALUES (1, 99, :s)"
                    ),
                    {"s": sid},
                )
            return counted(s, source_ids)

        monkeypatch.setattr(corpus, "sentences_only_in", meanwhile)
        with pytest.raises(BusyError, match="nothing was removed"):
            db.remove("xa", "a2")
        monkeypatch.undo()
        assert len(calls) == 2
        assert stored(db) == before and len(db.sources()) == 3
        assert_equals_reference(db, "xa", "xb")
        assert db.check().ok
    finally:
        db.close()


def test_a_file_source_is_found_by_its_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    corpus_file = tmp_path / "de.txt"
    corpus_file.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    np.save(tmp_path / "de.npy", random_unit(3, 8, 5))
    db = open_fresh("edge", 2, tmp_path, "scan")
    try:
        db.ingest("de.txt", "xb", embeddings=tmp_path / "de.npy")
        assert db.sources()[0]["name"] == str(corpus_file.resolve())
        assert db.remove("xb", "de.txt")["notes"] == []
        assert db.sources() == []
        # a source called "de.txt" beside the file's: the name takes its own, and says so
        np.save(tmp_path / "vier.npy", random_unit(1, 8, 6))
        (tmp_path / "other.txt").write_text("vier\n", encoding="utf-8")
        db.ingest("other.txt", "xb", source="de.txt", embeddings=tmp_path / "vier.npy")
        db.ingest("de.txt", "xb", embeddings=tmp_path / "de.npy")
        report = db.remove("xb", "de.txt")
        assert report["sources"] == ["de.txt"] and report["sentences_removed"] == 1
        assert report["notes"] == [
            f"de.txt named the source called so; the source of the file {corpus_file.resolve()} "
            "stays (name it by that path to remove it)."
        ]
        assert [row["name"] for row in db.sources()] == [str(corpus_file.resolve())]
        # both named: both go, and no note says one stays
        db.ingest("other.txt", "xb", source="de.txt", embeddings=tmp_path / "vier.npy")
        both = db.remove("xb", ["de.txt", str(corpus_file)], dry_run=True)
        assert len(both["sources"]) == 2 and both["notes"] == []
    finally:
        db.close()


def test_cli_lists_and_removes_sources(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
    finally:
        db.close()
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, ["-q", "--home", home, *args])

    listed = run("sources", "--lang", "xa", "--json")
    assert listed.exit_code == 0, listed.output
    assert [(r["name"], r["sentences"]) for r in json.loads(listed.output)] == [
        ("a1", 10),
        ("a2", 10),
    ]
    assert "a2" in run("sources").output
    dry = run("remove", "--lang", "xa", "--source", "a2", "--dry-run")
    assert dry.exit_code == 0 and "would remove 1 source, 10 lines, 5 sentences" in dry.output
    bad = run("remove", "--lang", "xa", "--source", "nope")
    assert bad.exit_code == 2 and bad.output.startswith("Error: No source 'nope' in xa")
    done = run("remove", "--lang", "xa", "--source", "a2", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["sentences_removed"] == 5
    assert [r["name"] for r in json.loads(run("sources", "--json").output)] == ["a1", "b1"]
    assert run("check").exit_code == 0


@pytest.mark.parametrize("mine_path", ["scan", "query"])
def test_lists_searched_again_in_small_groups_agree_with_reference(
    tmp_path: Path, mine_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_fresh("edge", 3, tmp_path, mine_path)
    try:
        _three_sources(db)
        miner = db.miner()
        miner.group_size = 2
        monkeypatch.setattr(db, "miner", lambda: miner)
        report = db.remove("xa", "a2")
        assert report["pairs"][0]["changed_lists"] > 2 * miner.group_size
        assert_equals_reference(db, "xa", "xb")
        assert db.check().ok
    finally:
        db.close()


@pytest.mark.parametrize("names", [["a2"], ["a1", "a2"]], ids=["some", "all"])
def test_a_removal_stopped_before_its_candidates_is_finished_by_mine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    """Stopped after its transaction (the sentences gone, the lists searched again) and
    before the candidates were recomputed: the dirty marks are durable, so the next mine
    finishes it; when a language lost every sentence, nothing is left waiting."""
    from bitextdb.miner import Miner

    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)

        def stopped(*_args: object) -> None:
            raise RuntimeError("stopped")

        monkeypatch.setattr(Miner, "_refresh", stopped)
        with pytest.raises(RuntimeError, match="stopped"):
            db.remove("xa", names)
        monkeypatch.undo()
        assert _texts(db, "xa") == ({f"a{i}" for i in range(10)} if names == ["a2"] else set())
        if names == ["a2"]:  # the work left shows, and the removal run again says where
            assert db.stats()["pairs"]["xa-xb"]["candidates_waiting"] > 0
            with pytest.raises(InputError, match=r"wait to be recomputed.*`bitextdb mine`"):
                db.remove("xa", names)
            assert db.export("xa-xb", output=str(tmp_path / "p.tsv"))["candidates_waiting"] > 0
        db.mine()
        assert all(p["candidates_waiting"] == 0 for p in db.stats()["pairs"].values())
        assert_equals_reference(db, "xa", "xb")
        assert db.check().ok
    finally:
        db.close()


def test_a_language_pair_mined_meanwhile_stops_the_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker mining the language against a new one between the lists' search and
    the deletion: that pair's lists were not searched again, so nothing is removed."""
    from bitextdb.db import graph

    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        before = stored(db)
        found = graph.partners
        calls: list[str] = []

        def meanwhile(s, lang):  # type: ignore[no-untyped-def]
            calls.append(lang)
            return found(s, lang) + (["xc"] if len(calls) == 2 else [])

        monkeypatch.setattr(graph, "partners", meanwhile)
        with pytest.raises(BusyError, match="nothing was removed"):
            db.remove("xa", "a2")
        monkeypatch.undo()
        assert stored(db) == before and len(db.sources()) == 3
        assert db.check().ok
    finally:
        db.close()


def test_vectors_left_by_a_removal_stopped_before_deleting_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after its transaction and before the vectors went: the points have no
    sentence, translate passes over them, check names them and --repair removes them."""
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        kept = {f"a{i}" for i in range(10)}

        def stopped(*_args: object) -> None:
            raise RuntimeError("stopped")

        monkeypatch.setattr(db.index, "delete", stopped)
        with pytest.raises(RuntimeError, match="stopped"):
            db.remove("xa", "a2")
        monkeypatch.undo()
        assert db.index.count("xa") == 15 and _texts(db, "xa") == kept
        for b in ("b0", "b5", "b11"):
            hits = db.translate(b, "xb", "xa", top=15).hits
            assert {h.text for h in hits} == kept
        with pytest.raises(InputError, match="No source 'a2'"):
            db.remove("xa", "a2")  # the rerun: the sentences are gone already
        report = db.check()
        assert not report.ok and report.languages["xa"]["orphan_vectors"] == 5
        assert db.check(repair=True).ok and db.index.count("xa") == 10
        assert_equals_reference(db, "xa", "xb")
    finally:
        db.close()


def test_a_removed_sentences_id_is_never_given_again(db_url: str, tmp_path: Path) -> None:
    """SQLite would give the largest id plus one, so removing the newest source and
    ingesting another would hand its ids out again; exports and vectors key on ids."""
    home = tmp_path / "home"
    bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=2).close()
    with bitextdb.open(home) as db:
        db.ingest_embeddings("xa", ["a0", "a1"], random_unit(2, 8, 1), source="a")
        db.ingest_embeddings("xb", ["b0", "b1", "b2"], random_unit(3, 8, 2), source="b1")
        removed = {i for i, t in _ids(db).items() if t.startswith("b")}
        db.remove("xb", "b1")
        for round_ in range(2):  # the second round removes what the first one added
            texts = [f"b{round_}-{i}" for i in range(4)]
            db.ingest_embeddings("xb", texts, random_unit(4, 8, 3 + round_), source="b2")
            ids = _ids(db)
            new = {i for i, t in ids.items() if t in texts}
            assert len(new) == 4 and min(new) > max(removed), (new, removed)
            assert db.check().ok
            assert_equals_reference(db, "xa", "xb")
            removed |= new
            db.remove("xb", "b2")
        db.ingest_embeddings("xa", ["a2"], random_unit(1, 8, 9), source="a2")
        assert max(_ids(db)) > max(removed)


def _ids(db: bitextdb.BitextDB) -> dict[int, str]:
    with db.db.session() as s:
        return dict(s.execute(text("SELECT id, text FROM sentences")).tuples().all())


def test_pipes_recorded_by_their_passing_names_are_never_missing(tmp_path: Path) -> None:
    """Versions before pipes were streams recorded `<(...)` by the name it had then."""
    from bitextdb.remove import file_missing

    assert file_missing(str(tmp_path / "gone.txt"))
    for name in ("/proc/25087/fd/pipe:[154025]", "/dev/fd/63"):
        assert not file_missing(name)
    assert not file_missing("relative.txt") and not file_missing(None)
    # a directory standing where the file was is no file: it cannot be read again
    (tmp_path / "now_a_dir.txt").mkdir()
    assert file_missing(str(tmp_path / "now_a_dir.txt"))
    (tmp_path / "a_file.txt").write_text("a line\n")
    assert not file_missing(str(tmp_path / "a_file.txt"))


def test_the_hint_after_a_stopped_removal_counts_only_the_pairs_mined(tmp_path: Path) -> None:
    """Candidates waiting in a pair `config --pairs` left out are no work `mine` does:
    the hint must not point there (stats and check leave them out too)."""
    db = open_fresh("edge", 3, tmp_path, "scan")
    try:
        _three_sources(db)
        db.ingest_embeddings("xc", [f"c{i}" for i in range(6)], random_unit(6, 8, 4))
        db.configure(pairs=["xa-xb"])
        with db.db.session() as s:  # as a removal stopped after its commit leaves them
            s.execute(text("UPDATE knn SET dirty = :t WHERE lang = 'xa'"), {"t": True})
        waiting = r"\d+ candidates of xa wait"
        with pytest.raises(InputError, match=waiting):
            db.remove("xa", "nope")
        db.mine()  # does the mined pair's work; xa-xc's waits, left out
        with pytest.raises(InputError) as caught:
            db.remove("xa", "nope")
        assert not re.search(waiting, str(caught.value))
        assert db.stats()["pairs"]["xa-xb"]["candidates_waiting"] == 0
    finally:
        db.close()


def test_a_language_with_sixteen_partners_is_removed_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """A removal locks every language pair of its language: a connection a lock took
    sixteen of SQLAlchemy's pool of fifteen, and the removal timed out."""
    partners = [f"x{chr(ord('a') + i)}" for i in range(16)]
    pairs = ",".join(f"en-{lang}" for lang in partners)
    db = bitextdb.init(
        tmp_path / "home", db=postgres_url, model="synthetic", dim=8, k=2, pairs=pairs
    )
    try:
        db.ingest_embeddings("en", [f"en {i}" for i in range(6)], random_unit(6, 8, 0), source="e")
        for n, lang in enumerate(partners):
            texts = [f"{lang} {i}" for i in range(6)]
            db.ingest_embeddings(lang, texts, random_unit(6, 8, n + 1), mine=False)
        db.mine()
        assert len(db.language_pairs()) == 16
        db.remove("en", "e")
        assert db.check().ok
        assert "en" not in db.stats()["languages"]
    finally:
        db.close()
