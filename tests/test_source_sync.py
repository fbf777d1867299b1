"""A file ingested again after it changed: its source follows the file, the sentences no
source holds any more go, and the pairs are those of a batch run over what the files hold."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import bitextdb
from bitextdb import ingest
from bitextdb.cli import cli
from bitextdb.db import corpus
from bitextdb.errors import InputError
from bitextdb.lock import displacing_lock, source_lock
from bitextdb.remove import remove_displaced
from bitextdb.source_sync import SourceSync
from tests.test_miner import assert_equals_reference, make_vectors, open_fresh
from tests.test_remove import _accepted_texts, _texts
from tests.test_segment import DE, EN, fruit_file, occurrences, pairs_of, unit

FILES = {"a0": "xa", "a1": "xa", "b0": "xb"}


def sentence(lang: str, i: int) -> str:
    return f"{lang} sentence number {i}"


def write(tmp: Path, name: str, rows: list[int | None], vectors: np.ndarray) -> Path:
    """Write file ``name`` (a line a row; None: an empty line) and its vectors beside it."""
    lang = FILES[name]
    path = tmp / f"{name}.txt"
    lines = ["" if i is None else sentence(lang, i) for i in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    np.save(tmp / f"{name}.npy", vectors[[0 if i is None else i for i in rows]])
    return path


def ids_by_text(db: bitextdb.BitextDB) -> dict[str, int]:
    with db.db.session() as s:
        return {t: int(i) for i, t in s.execute(text("SELECT id, text FROM sentences"))}


@st.composite
def rewrites(draw: st.DrawFn) -> dict:
    """Files of two languages written and ingested, then rewritten (lines changed, moved,
    emptied, added, cut off) and ingested again, in some order."""
    n = {lang: draw(st.integers(1, 10)) for lang in ("xa", "xb")}
    ops = []
    for _ in range(draw(st.integers(2, 6))):
        name = draw(st.sampled_from(sorted(FILES)))
        row = st.none() | st.integers(0, n[FILES[name]] - 1)
        ops.append((name, draw(st.lists(row, min_size=1, max_size=9))))
    return {
        "n": n,
        "k": draw(st.integers(1, 3)),
        "seed": draw(st.integers(0, 10_000)),
        "dup": draw(st.sampled_from([0, 0, 3])),
        "ops": ops,
    }


@pytest.mark.slow
@pytest.mark.parametrize("mine_path", ["scan", "query"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=rewrites())
def test_rewritten_files_leave_the_pairs_of_a_batch_run_over_what_they_hold(
    sc: dict, mine_path: str
) -> None:
    vectors = {
        lang: make_vectors(sc["n"][lang], 8, sc["seed"] + i, sc["dup"])
        for i, lang in enumerate(("xa", "xb"))
    }
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "BATCH", 3)  # keys are settled across batch boundaries
        root = Path(tmp)
        db = open_fresh("edge", sc["k"], root, mine_path)
        held: dict[str, list[int | None]] = {}
        try:
            for name, rows in sc["ops"]:
                path = write(root, name, rows, vectors[FILES[name]])
                options = {"embeddings": root / f"{name}.npy", "source": name}
                before = (_texts(db, "xa"), _texts(db, "xb"), occurrences(db))
                (preview,) = db.ingest(path, FILES[name], dry_run=True, **options)["ingested"]
                assert (_texts(db, "xa"), _texts(db, "xb"), occurrences(db)) == before
                (done,) = db.ingest(path, FILES[name], **options)["ingested"]
                counts = ("read", "new", "duplicates", "changed", "dropped", "sentences_removed")
                assert {k: preview[k] for k in counts} == {k: done[k] for k in counts}
                held[name] = rows
                for lang in ("xa", "xb"):
                    now = {
                        sentence(lang, i)
                        for name, rows in held.items()
                        if FILES[name] == lang
                        for i in rows
                        if i is not None
                    }
                    assert _texts(db, lang) == now
                assert_equals_reference(db, "xa", "xb")
            assert db.check().ok
            got = {s["name"]: s["occurrences"] for s in db.sources()}
            assert got == {name: sum(i is not None for i in rows) for name, rows in held.items()}
        finally:
            db.close()


def test_a_changed_line_takes_its_new_sentence_and_the_old_one_goes(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    with bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1) as db:
        eye = unit(np.eye(4).tolist())
        path, npy = fruit_file(db, tmp_path, eye)
        db.ingest_embeddings("de", ["ein apfel", "ein brot", "ein haus"], eye[:3])
        assert ("ein brot", "a bread") in {(r[0], r[1]) for r in pairs_of(db)}

        path.write_text("an apple\na house\n", encoding="utf-8")
        np.save(npy, eye[[0, 2]])
        result = db.ingest(path, "en", embeddings=npy, source="file")
        report = result["ingested"][0]
        assert (report["changed"], report["dropped"], report["sentences_removed"]) == (1, 0, 1)
        assert report["new"] == 1
        assert [p["pair"] for p in result["removed"]] == ["de-en"]
        assert _texts(db, "en") == {"an apple", "a house"}
        assert {(r[0], r[1]) for r in pairs_of(db)} == {
            ("ein apfel", "an apple"),
            ("ein haus", "a house"),
        }
        assert db.check().ok
        (source,) = db.sources("en")
        assert (source["records"], source["occurrences"]) == (2, 2)

        # unchanged, it changes nothing
        again = db.ingest(path, "en", embeddings=npy, source="file")
        assert again["removed"] == []
        assert (again["ingested"][0]["changed"], again["ingested"][0]["dropped"]) == (0, 0)


def test_lines_that_only_moved_keep_their_sentences(
    db_url: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BATCH", 2)
    with bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=1) as db:
        vectors = make_vectors(6, 8, 3, 0)
        path = write(tmp_path, "a0", [1, 2, 3, 4, 5], vectors)
        db.ingest(path, "xa", embeddings=tmp_path / "a0.npy", mine=False)
        before = ids_by_text(db)
        path = write(tmp_path, "a0", [0, 1, 2, 3, 4, 5], vectors)  # a line above them all
        report = db.ingest(path, "xa", embeddings=tmp_path / "a0.npy", mine=False)["ingested"][0]
        assert (report["changed"], report["dropped"], report["sentences_removed"]) == (5, 0, 0)
        assert report["new"] == 1 and report["encoded"] == 1
        after = ids_by_text(db)
        assert {t: after[t] for t in before} == before  # not removed and stored again
        name = str(path.resolve())
        assert [(o[1], o[4]) for o in occurrences(db) if o[0] == name] == [
            (i, sentence("xa", i)) for i in range(6)
        ]


def test_a_shorter_file_drops_its_tail_but_not_what_another_source_holds(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    with bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=2) as db:
        vectors = make_vectors(5, 8, 11, 0)
        a0 = write(tmp_path, "a0", [0, 1, None, 2, 3], vectors)
        a1 = write(tmp_path, "a1", [3], vectors)
        for name, path in (("a0", a0), ("a1", a1)):
            db.ingest(path, "xa", embeddings=tmp_path / f"{name}.npy", source=name)
        db.ingest_embeddings("xb", [sentence("xb", i) for i in range(4)], make_vectors(4, 8, 5, 0))
        before = _accepted_texts(db)

        a0 = write(tmp_path, "a0", [0, None], vectors)  # line 1 emptied, lines 2-4 cut off
        report = db.ingest(a0, "xa", embeddings=tmp_path / "a0.npy", source="a0")["ingested"][0]
        assert (report["changed"], report["dropped"], report["sentences_removed"]) == (0, 3, 2)
        assert report["skipped"] == {"empty": 1}
        assert _texts(db, "xa") == {sentence("xa", 0), sentence("xa", 3)}  # a1 holds 3
        assert_equals_reference(db, "xa", "xb")
        assert _accepted_texts(db) != before and db.check().ok
        listed = {s["name"]: (s["records"], s["occurrences"]) for s in db.sources("xa")}
        assert listed == {"a0": (2, 1), "a1": (1, 1)}


def test_a_record_split_into_fewer_sentences_drops_its_last_parts(
    db_url: str, home: Path, static_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BATCH", 2)  # a record's sentences come in two batches
    paragraphs = tmp_path / "en.txt"
    paragraphs.write_text(" ".join(EN[:3]) + "\n" + " ".join(EN[3:]) + "\n", encoding="utf-8")
    with bitextdb.init(home, db=db_url, model=str(static_model)) as db:
        db.ingest(paragraphs, "en", split_sentences=True, mine=False)
        paragraphs.write_text(" ".join(EN[:2]) + "\n" + " ".join(EN[3:]) + "\n", encoding="utf-8")
        report = db.ingest(paragraphs, "en", split_sentences=True, mine=False)["ingested"][0]
        assert (report["changed"], report["dropped"], report["sentences_removed"]) == (0, 1, 1)
        assert [(o[1], o[2], o[4]) for o in occurrences(db)] == [
            (0, 0, EN[0]),
            (0, 1, EN[1]),
            (1, 0, EN[3]),
            (1, 1, EN[4]),
            (1, 2, EN[5]),
        ]
        assert _texts(db, "en") == set(EN) - {EN[2]}
        assert db.check().ok


def test_a_new_external_id_is_written_without_changing_the_sentence(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    with bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=1) as db:
        path, npy = tmp_path / "a.tsv", tmp_path / "a.npy"
        np.save(npy, make_vectors(2, 8, 4, 0))
        path.write_text("id\ttext\n7\tan apple\n8\ta bread\n", encoding="utf-8")
        options = {"embeddings": npy, "column": "text", "id_column": "id", "mine": False}
        db.ingest(path, "xa", **options)
        path.write_text("id\ttext\n7\tan apple\n9\ta bread\n", encoding="utf-8")
        report = db.ingest(path, "xa", **options)["ingested"][0]
        assert (report["changed"], report["dropped"], report["new"]) == (0, 0, 0)
        assert [(o[3], o[4]) for o in occurrences(db)] == [("7", "an apple"), ("9", "a bread")]


def test_a_source_holds_one_file_or_texts(db_url: str, home: Path, tmp_path: Path) -> None:
    with bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=1) as db:
        vectors = make_vectors(4, 8, 2, 0)
        first = write(tmp_path, "a0", [0, 1], vectors)
        db.ingest(first, "xa", embeddings=tmp_path / "a0.npy", source="news")
        other = write(tmp_path, "a1", [2], vectors)
        with pytest.raises(InputError, match="a source holds one file"):
            db.ingest(other, "xa", embeddings=tmp_path / "a1.npy", source="news")
        # texts appended to a file's source would go at its next read, and the other way
        with pytest.raises(InputError, match="give the texts another source"):
            db.ingest_embeddings("xa", [sentence("xa", 3)], vectors[3:], source="news")
        db.ingest_embeddings("xa", [sentence("xa", 3)], vectors[3:], source="texts")
        with pytest.raises(InputError, match="holds texts given in memory"):
            db.ingest(other, "xa", embeddings=tmp_path / "a1.npy", source="texts")
        assert _texts(db, "xa") == {sentence("xa", i) for i in (0, 1, 3)}
        assert {s["name"]: s["occurrences"] for s in db.sources("xa")} == {"news": 2, "texts": 1}


def test_cli_reports_what_a_changed_file_changed(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    init = ["-q", "init", "--model", "synthetic", "--dim", "8", "--k", "1"]
    assert runner.invoke(cli, init).exit_code == 0
    vectors = make_vectors(4, 8, 1, 0)
    path = write(tmp_path, "a0", [0, 1, 2], vectors)
    ingest_a0 = ["ingest", str(path), "--lang", "xa", "--embeddings", str(tmp_path / "a0.npy")]
    assert runner.invoke(cli, ["-q", *ingest_a0]).exit_code == 0
    write(tmp_path, "b0", [0, 1, 2], make_vectors(4, 8, 2, 0))
    ingest_b0 = ["ingest", str(tmp_path / "b0.txt"), "--lang", "xb"]
    result = runner.invoke(cli, ["-q", *ingest_b0, "--embeddings", str(tmp_path / "b0.npy")])
    assert result.exit_code == 0, result.output

    write(tmp_path, "a0", [0, 3], vectors)
    result = runner.invoke(cli, ["-q", *ingest_a0, "--dry-run"])
    assert result.exit_code == 0 and result.output.startswith("dry run: ")
    assert "changed 1, dropped 1, sentences removed 2" in result.output
    assert runner.invoke(cli, ["-q", "ingest", "-", "--lang", "xa", "--dry-run"]).exit_code == 2
    np.save(tmp_path / "short.npy", vectors[:1])  # a vector for one of the file's two lines
    short = [*ingest_a0[:-1], str(tmp_path / "short.npy")]
    for flags in (["--dry-run"], []):  # the dry run refuses what the ingest refuses
        result = runner.invoke(cli, ["-q", *short, *flags])
        assert result.exit_code == 2 and "they must be line-aligned" in result.output
    result = runner.invoke(cli, ["-q", *ingest_a0])
    assert result.exit_code == 0, result.output
    assert "changed 1, dropped 1, sentences removed 2" in result.output
    assert "stored with the given vectors 1 in" in result.output  # nothing was encoded
    assert "removed from xa-xb:" in result.output
    write(tmp_path, "a0", [0], vectors)
    result = runner.invoke(cli, ["-q", *ingest_a0, "--json", "--no-mine"])
    out = json.loads(result.stdout)
    report = out["ingested"][0]
    assert (report["changed"], report["dropped"], report["sentences_removed"]) == (0, 1, 1)
    assert [p["pair"] for p in out["removed"]] == ["xa-xb"]
    assert runner.invoke(cli, ["-q", "check"]).exit_code == 0


@pytest.mark.parametrize("finish", ["ingest", "mine", "repair"])
def test_a_changed_file_stopped_half_way_is_finished_later(
    db_url: str,
    home: Path,
    static_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    finish: str,
) -> None:
    """The sentences an ingest displaced are recorded with the lines that displaced them,
    so the next ingest, mine or ``check --repair`` removes those no source holds."""
    monkeypatch.setattr(ingest, "BATCH", 2)
    en, de = tmp_path / "en.txt", tmp_path / "de.txt"
    de.write_text("\n".join(DE) + "\n", encoding="utf-8")
    en.write_text("\n".join(EN) + "\n", encoding="utf-8")
    # the first two lines change, the second to a sentence that a line below holds too
    now = [EN[1], EN[5], *EN[2:]]
    with bitextdb.init(tmp_path / "reference", model=str(static_model)) as ref:
        ref.ingest(de, "de")
        ref.ingest_texts("en", now)
        expected = pairs_of(ref)
    with bitextdb.init(home, db=db_url, model=str(static_model)) as db:
        db.ingest(de, "de")
        db.ingest(en, "en")
        en.write_text("\n".join(now) + "\n", encoding="utf-8")
        calls = 0
        reconcile = SourceSync.reconcile

        def stop_in_the_second_batch(self, s, rows):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt
            return reconcile(self, s, rows)

        monkeypatch.setattr(SourceSync, "reconcile", stop_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            db.ingest(en, "en")
        monkeypatch.setattr(SourceSync, "reconcile", reconcile)
        report = db.check()
        assert report.displaced_waiting == 2 and not report.ok
        assert report.languages["en"]["without_source"] == 1  # EN[0]; EN[1] moved up

        if finish == "ingest":
            db.ingest(en, "en")
        elif finish == "mine":
            db.mine()
        else:
            repaired = db.check(repair=True).repaired
            assert repaired["displaced_removed"] == 1
            assert repaired["sentences_attributed"] == 0
        assert _texts(db, "en") == set(now)
        assert pairs_of(db) == expected
        final = db.check()
        assert final.ok and final.displaced_waiting == 0


def test_sources_whose_file_was_deleted_are_listed_and_removed(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    with bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=1) as db:
        vectors = make_vectors(6, 8, 9, 0)
        kept = write(tmp_path, "a0", [0, 1, 2], vectors)
        gone = write(tmp_path, "a1", [2, 3, 4], vectors)
        for path in (kept, gone):
            db.ingest(path, "xa", embeddings=path.with_suffix(".npy"), mine=False)
        db.ingest_embeddings("xa", [sentence("xa", 5)], vectors[5:], source="texts")
        db.ingest_embeddings("xb", [sentence("xb", i) for i in range(4)], make_vectors(4, 8, 3, 0))
        assert db.remove_missing() == []
        gone.unlink()
        listed = {s["name"]: s["missing"] for s in db.sources()}
        assert listed == {str(kept): False, str(gone): True, "texts": False, "embeddings": False}
        dry = db.remove_missing("xa", dry_run=True)
        assert [(r["sources"], r["sentences_removed"], r["sentences_kept"]) for r in dry] == [
            ([str(gone)], 2, 1)
        ]
        assert _texts(db, "xa") == {sentence("xa", i) for i in range(6)}
        (report,) = db.remove_missing()
        assert report["sentences_removed"] == 2 and report["dry_run"] is False
        assert _texts(db, "xa") == {sentence("xa", i) for i in (0, 1, 2, 5)}
        assert_equals_reference(db, "xa", "xb")
        assert db.remove_missing("xb") == [] and db.check().ok


def test_cli_removes_the_sources_of_deleted_files(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["-q", "init", "--model", "synthetic", "--dim", "8"]).exit_code == 0
    vectors = make_vectors(3, 8, 1, 0)
    path = write(tmp_path, "a0", [0, 1], vectors)
    args = ["-q", "ingest", str(path), "--lang", "xa", "--embeddings", str(tmp_path / "a0.npy")]
    assert runner.invoke(cli, args).exit_code == 0
    assert "no source's file is missing" in runner.invoke(cli, ["remove", "--missing"]).output
    path.unlink()
    assert "(file missing)" in runner.invoke(cli, ["sources"]).output
    result = runner.invoke(cli, ["remove", "--missing", "--dry-run", "--json"])
    assert [r["sentences_removed"] for r in json.loads(result.stdout)] == [2]
    result = runner.invoke(cli, ["-q", "remove", "--missing"])
    assert result.exit_code == 0
    assert "xa: removed 1 source, 2 lines, 2 sentences" in result.output
    assert runner.invoke(cli, ["sources"]).output.strip() == "no sources"
    for bad in (["remove"], ["remove", "--missing", "--source", "x"], ["remove", "--source", "x"]):
        result = runner.invoke(cli, bad)
        assert result.exit_code == 2 and result.output.startswith("Error:"), result.output


def _advisory_locks(db: bitextdb.BitextDB) -> list[tuple[str, bool]]:
    """``(mode, granted)`` of the advisory locks held or awaited on the database (this
    one only: pg_locks lists every database's, and other programs' waits are not ours)."""
    here = "(SELECT oid FROM pg_database WHERE datname = current_database())"
    with db.db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT mode, granted FROM pg_locks"
                f" WHERE locktype = 'advisory' AND database = {here}"
            )
        ).all()
    return [(mode, bool(granted)) for mode, granted in rows]


def _wait_for_a_waiter(db: bitextdb.BitextDB, failure: str) -> None:
    """Return once some connection waits for an exclusive advisory lock (15 s at most)."""
    for _ in range(300):
        if ("ExclusiveLock", False) in _advisory_locks(db):
            return
        time.sleep(0.05)
    pytest.fail(failure)


def test_displaced_sentences_wait_for_running_ingests_of_changed_files(
    postgres_url: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On shared PostgreSQL a sentence one worker's ingest displaced may come back a few
    lines below: another worker removes displaced sentences only once no ingest of a
    changed file of that language runs (an advisory lock, shared by ingests)."""
    with bitextdb.init(home, db=postgres_url, model="synthetic", dim=8, k=1) as db:
        vectors = make_vectors(3, 8, 6, 0)
        path = write(tmp_path, "a0", [0, 1, 2], vectors)
        db.ingest(path, "xa", embeddings=tmp_path / "a0.npy", mine=False)
        seen: list[list[tuple[str, bool]]] = []
        reconcile = SourceSync.reconcile

        def look(self, s, rows):  # type: ignore[no-untyped-def]
            seen.append(_advisory_locks(db))
            return reconcile(self, s, rows)

        monkeypatch.setattr(SourceSync, "reconcile", look)
        db.ingest(path, "xa", embeddings=tmp_path / "a0.npy", mine=False)  # read again
        assert ("ShareLock", True) in seen[0]  # the ingest holds it shared

        # another worker's ingest is running: it holds the lock shared
        with db.db.engine.connect() as conn:
            conn.execute(text("DELETE FROM occurrences WHERE position = 0"))
            conn.commit()
        with db.db.session() as s:
            corpus.note_displaced(s, [ids_by_text(db)[sentence("xa", 0)]])
        running, done = threading.Event(), threading.Event()

        def other_ingest() -> None:
            with db.db.advisory_lock(displacing_lock("xa"), shared=True):
                running.set()
                done.wait(30)

        holder = threading.Thread(target=other_ingest)
        holder.start()
        assert running.wait(30)
        result: list[set[int]] = []
        remover = threading.Thread(target=lambda: result.append(remove_displaced(db)[0]))
        remover.start()
        _wait_for_a_waiter(db, "the removal did not wait for the running ingest")
        assert sentence("xa", 0) in _texts(db, "xa") and not result
        done.set()
        holder.join(30)
        remover.join(30)
        assert len(result[0]) == 1 and sentence("xa", 0) not in _texts(db, "xa")


def test_a_dry_run_of_several_files_counts_as_the_ingest_does(home: Path, tmp_path: Path) -> None:
    """A sentence new in the first file is a duplicate in the second, in the dry run too."""
    vectors = make_vectors(4, 8, 3, 0)
    with bitextdb.init(home, model="synthetic", dim=8, k=1) as db:
        a0 = write(tmp_path, "a0", [0, 1], vectors)
        a1 = write(tmp_path, "a1", [1, 2, 2], vectors)
        dry = db.ingest([a0, a1], "xa", dry_run=True)["ingested"]
        real = [db.ingest(p, "xa", embeddings=p.with_suffix(".npy"), mine=False) for p in (a0, a1)]
        counts = [(r["new"], r["duplicates"]) for r in dry]
        assert counts == [(2, 0), (1, 2)]
        assert counts == [(r["ingested"][0]["new"], r["ingested"][0]["duplicates"]) for r in real]


def test_source_names_are_checked_with_their_moment(home: Path, tmp_path: Path) -> None:
    """An empty name is refused (it fell back to the path); a name that fits alone but not
    with the ``@time`` an appended read adds is refused before anything is stored (it
    failed in PostgreSQL's column on the way in)."""
    vectors = make_vectors(2, 8, 4, 0)
    path = write(tmp_path, "a0", [0, 1], vectors)
    npy = tmp_path / "a0.npy"
    with bitextdb.init(home, model="synthetic", dim=8, k=1) as db:
        for name, append, message in (
            ("", False, "cannot be empty"),
            ("  ", True, "cannot be empty"),
            ("n" * 500, True, "at most 512"),
        ):
            with pytest.raises(InputError, match=message):
                db.ingest(path, "xa", embeddings=npy, source=name, append=append)
        assert db.sources("xa") == []
        db.ingest(path, "xa", embeddings=npy, source="n" * 479, append=True)
        assert [len(s["name"]) for s in db.sources("xa")] == [479 + 33]


def test_a_language_whose_file_emptied_leaves_no_work_waiting(home: Path, tmp_path: Path) -> None:
    vectors = make_vectors(3, 8, 5, 0)
    with bitextdb.init(home, model="synthetic", dim=8, k=1) as db:
        a0 = write(tmp_path, "a0", [0, 1, 2], vectors)
        b0 = write(tmp_path, "b0", [0, 1], vectors)
        db.ingest(a0, "xa", embeddings=tmp_path / "a0.npy")
        db.ingest(b0, "xb", embeddings=tmp_path / "b0.npy")
        write(tmp_path, "b0", [], vectors)  # emptied: xb keeps its source, no sentence
        db.ingest(b0, "xb", embeddings=tmp_path / "b0.npy")
        assert db.stats()["pairs"]["xa-xb"]["pending"] == {"xa": 0, "xb": 0}
        assert db.check().ok
        write(tmp_path, "b0", [2], vectors)
        db.ingest(b0, "xb", embeddings=tmp_path / "b0.npy")
        assert db.stats()["pairs"]["xa-xb"]["pending"] == {"xa": 0, "xb": 0}
        assert_equals_reference(db, "xa", "xb")


def test_workers_reading_the_same_file_take_turns(
    postgres_url: str, home: Path, tmp_path: Path
) -> None:
    """On shared PostgreSQL two workers ingesting the same changed file compare it with
    its source one after the other (an advisory lock per source): the second finds the
    file's lines already stored."""
    with bitextdb.init(home, db=postgres_url, model="synthetic", dim=8, k=1) as db:
        vectors = make_vectors(6, 8, 7, 0)
        path = write(tmp_path, "a0", [0, 1, 2, 3], vectors)
        npy = tmp_path / "a0.npy"
        db.ingest(path, "xa", embeddings=npy, mine=False)
        write(tmp_path, "a0", [0, 4, 2, 5], vectors)  # two lines changed
        done = threading.Event()

        def other_worker() -> None:
            with db.db.advisory_lock(source_lock("xa", str(path.resolve()))):
                done.wait(30)

        holder = threading.Thread(target=other_worker)
        holder.start()
        reports: list[dict] = []

        def ingest() -> None:
            reports.append(db.ingest(path, "xa", embeddings=npy, mine=False)["ingested"][0])

        waiting = threading.Thread(target=ingest)
        waiting.start()
        _wait_for_a_waiter(db, "the ingest did not wait for the other worker's read of the file")
        assert not reports and sentence("xa", 4) not in _texts(db, "xa")
        done.set()
        holder.join(30)
        waiting.join(30)
        assert reports[0]["changed"] == 2

        write(tmp_path, "a0", [5, 1, 3], vectors)  # changed again, read by two at once
        start = threading.Barrier(2)

        def race() -> None:
            start.wait(30)
            ingest()

        workers = [threading.Thread(target=race) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        later = sorted((r["changed"], r["dropped"], r["sentences_removed"]) for r in reports[1:])
        assert later == [(0, 0, 0), (3, 1, 3)]  # one did the work; the other found it done
        assert _texts(db, "xa") == {sentence("xa", i) for i in (5, 1, 3)}
        assert db.check().ok


def test_standard_input_is_a_source_of_its_own_each_time(home: Path, static_model: Path) -> None:
    """Never compared with an earlier read, and split when asked."""
    runner = CliRunner()
    assert runner.invoke(cli, ["-q", "init", "--model", str(static_model)]).exit_code == 0
    args = ["-q", "ingest", "-", "--lang", "en", "--no-mine", "--json"]
    for text_in, split in ((" ".join(EN[:2]) + "\n", True), (EN[2] + "\n", False)):
        flags = ["--split-sentences"] if split else []
        result = runner.invoke(cli, [*args, *flags], input=text_in)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)["ingested"][0]
        assert (report["read"], report["new"], report["dropped"]) == (1, 2 if split else 1, 0)
    for nothing in ("", "\n \n"):  # read, but no sentence: no source of nothing
        assert runner.invoke(cli, args, input=nothing).exit_code == 0
    result = runner.invoke(cli, ["sources", "--json"])
    rows = json.loads(result.stdout)
    listed = [(s["occurrences"], s["split_sentences"], s["path"]) for s in rows]
    assert sorted(listed) == [(1, False, None), (2, True, None)]


def test_appended_reads_keep_what_earlier_reads_gave(home: Path, tmp_path: Path) -> None:
    with bitextdb.init(home, model="synthetic", dim=8, k=1) as db:
        vectors = make_vectors(4, 8, 8, 0)
        path = write(tmp_path, "a0", [0, 1], vectors)
        npy = tmp_path / "a0.npy"
        first = db.ingest(path, "xa", embeddings=npy, source="daily", append=True, mine=False)
        write(tmp_path, "a0", [2, 3], vectors)  # the same name, the next day's content
        (dry,) = db.ingest(path, "xa", source="daily", append=True, dry_run=True)["ingested"]
        assert dry["source"].startswith("daily@") and (dry["new"], dry["dropped"]) == (2, 0)
        second = db.ingest(path, "xa", embeddings=npy, source="daily", append=True, mine=False)
        names = [r["ingested"][0]["source"] for r in (first, second)]
        assert all(name.startswith("daily@") for name in names) and names[0] != names[1]
        assert second["ingested"][0]["dropped"] == 0 and second["removed"] == []
        assert _texts(db, "xa") == {sentence("xa", i) for i in range(4)}
        listed = {s["name"]: (s["occurrences"], s["path"]) for s in db.sources("xa")}
        assert listed == {names[0]: (2, None), names[1]: (2, None)}
        path.unlink()
        assert db.remove_missing() == []  # appended reads are not files' sources
        assert db.remove("xa", [names[0]])["sentences_removed"] == 2


def test_a_file_whose_encoding_or_line_ends_changed_loses_no_line(
    home: Path, static_model: Path, tmp_path: Path
) -> None:
    """Saved again as Latin-1, or with CR alone between lines, a file would read as lines
    that are not UTF-8, or as one long line: the lines its source holds must not leave."""
    lines = ["die katze schläft", "ein hund läuft", "mein freund liest ein buch"]
    path = tmp_path / "de.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with bitextdb.init(home, model=str(static_model)) as db:
        db.ingest(path, "de")
        before = db.sources("de")
        path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        for dry_run in (True, False):
            with pytest.raises(InputError, match=r"Line 1 of the file .* no longer valid UTF-8"):
                db.ingest(path, "de", dry_run=dry_run)
        path.write_bytes(("\r".join(lines) + "\r").encode("utf-8"))
        with pytest.raises(InputError, match="CR alone"):
            db.ingest(path, "de")
        assert db.sources("de") == before and db.check().ok
        # a line that was never readable is no line of the source: it may stay unreadable
        path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe bad\n")
        report = db.ingest(path, "de")["ingested"][0]
        assert report["skipped"] == {"invalid_utf8": 1} and report["dropped"] == 0


def test_a_jsonl_file_that_became_another_kind_of_file_loses_no_sentence(
    home: Path, static_model: Path, tmp_path: Path
) -> None:
    """A JSON Lines file overwritten by a page of HTML (a failed download) read as lines
    all malformed: its source dropped every sentence it held, with exit 0."""
    path = tmp_path / "de.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["die katze", "ein hund"]))
    with bitextdb.init(home, model=str(static_model)) as db:
        db.ingest(path, "de")
        before = db.sources("de")
        path.write_text("<html><body>502 Bad Gateway</body></html>\n")
        for dry_run in (True, False):
            with pytest.raises(InputError, match="is not JSON Lines"):
                db.ingest(path, "de", dry_run=dry_run)
        assert db.sources("de") == before and db.check().ok
