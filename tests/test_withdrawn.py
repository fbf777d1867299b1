"""Withdrawn pairs: a consumer of cursor exports learns what to drop, and so mirrors the
database exactly, whatever was ingested or removed between two exports."""

from __future__ import annotations

import gzip
import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

import bitextdb
from bitextdb.cli import cli
from bitextdb.cursors import drop_cursor, list_cursors, prune_withdrawn
from bitextdb.errors import InputError
from bitextdb.export import export_pairs, iter_records, iter_withdrawn
from tests import crash_helpers as ch
from tests.schema_helpers import database_at, model_differences
from tests.test_miner import open_fresh
from tests.test_remove import apply, removals, scenario_vectors

Mirror = dict[tuple[str, str], float]


def unit(*rows: list[float]) -> np.ndarray:
    vecs = np.array(rows, dtype=np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def read(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read()


def full(db: bitextdb.BitextDB, pair: str, min_score: float, **filters: object) -> Mirror:
    """What a full export writes now, as {(src, tgt): margin}."""
    records = iter_records(db, pair, min_score=min_score, **filters)  # type: ignore[arg-type]
    return {(r["src"], r["tgt"]): r["margin"] for r in records}


def sync(
    db: bitextdb.BitextDB, mirror: Mirror, out: Path, *, pair: str = "xa-xb", **options: object
) -> dict:
    """One cursor export with its withdrawals, applied to ``mirror``; the summary."""
    summary = export_pairs(
        db,
        pair,
        output=str(out / "pairs.jsonl"),
        fmt="jsonl",
        cursor="mirror",
        withdrawn=str(out / "withdrawn.jsonl"),
        **options,  # type: ignore[arg-type]
    )
    written = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    dropped = [json.loads(line) for line in (out / "withdrawn.jsonl").read_text().splitlines()]
    keys = {(r["src"], r["tgt"]) for r in written}
    assert not keys & {(r["src"], r["tgt"]) for r in dropped}, "a pair both written and dropped"
    assert len(dropped) == len({(r["src"], r["tgt"]) for r in dropped}), "a pair dropped twice"
    # disjoint, so the order does not matter: here additions go first
    for r in written:
        mirror[(r["src"], r["tgt"])] = r["margin"]
    for r in dropped:
        mirror.pop((r["src"], r["tgt"]), None)
    return summary


# -- the property: a mirror fed by cursor exports equals a full export after every step -------
def run_mirror(
    sc: dict,
    min_score: float,
    ratio: float | None,
    quiet: set[int],
    mine_path: str,
    db_url: str | None = None,
) -> None:
    """After every operation but those in ``quiet`` (whose changes pile up until the next
    export), a cursor export and its withdrawals update the mirror."""
    vectors = scenario_vectors(sc)
    mirror: Mirror = {}
    with tempfile.TemporaryDirectory() as tmp:
        if db_url is None:
            db = open_fresh("edge", sc["k"], Path(tmp), mine_path)
        else:
            home = Path(tmp) / "home"
            bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=sc["k"]).close()
            db = bitextdb.open(home, db=db_url, mine_path=mine_path)
        try:
            for step, op in enumerate(sc["ops"]):
                apply(db, op, vectors)
                if step in quiet and step < len(sc["ops"]) - 1:
                    continue
                try:
                    sync(db, mirror, Path(tmp), min_score=min_score, max_length_ratio=ratio)
                except InputError:  # a language without sentences and nothing ever withdrawn
                    assert not mirror
                    continue
                try:
                    expected = full(db, "xa-xb", min_score, max_length_ratio=ratio)
                except InputError:  # a language without sentences: no pair at all
                    expected = {}
                assert mirror == expected
        finally:
            db.close()


@pytest.mark.slow
@pytest.mark.parametrize("mine_path", ["scan", "query"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sc=removals(),
    min_score=st.sampled_from([-np.inf, 0.95, 1.05]),
    ratio=st.sampled_from([None, 1.02]),  # 1.02 drops "... number 9" with "... number 10"
    quiet=st.sets(st.integers(0, 12), max_size=8),
)
def test_a_mirror_of_cursor_exports_equals_the_full_export(
    sc: dict, min_score: float, ratio: float | None, quiet: set[int], mine_path: str
) -> None:
    run_mirror(sc, min_score, ratio, quiet, mine_path)


@pytest.mark.slow
@pytest.mark.postgres
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    sc=removals(),
    min_score=st.sampled_from([-np.inf, 1.05]),
    quiet=st.sets(st.integers(0, 12), max_size=8),
)
def test_a_mirror_of_cursor_exports_equals_the_full_export_on_postgres(
    postgres_base: str, sc: dict, min_score: float, quiet: set[int]
) -> None:
    """The same on PostgreSQL (a schema of its own for each example; scan path)."""
    with ch.pg_schema(postgres_base) as url:
        run_mirror(sc, min_score, None, quiet, "scan", db_url=url)


# -- each kind of withdrawal -------------------------------------------------------------------
def test_displaced_removed_and_accepted_again(db_url: str, home: Path, tmp_path: Path) -> None:
    """en 'a' pairs with de 'a1'; a closer 'a2' displaces it; removing a2's source brings
    a1 back; removing a1's source too leaves nothing, and a withdrawal says so."""
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1)
    mirror: Mirror = {}
    try:
        db.ingest_embeddings(
            "en", ["an apple", "a bread"], unit([1, 0, 0, 0], [0, 1, 0, 0]), source="e"
        )
        db.ingest_embeddings(
            "de", ["ein apfel", "ein brot"], unit([1, 0.5, 0.3, 0], [0, 1, 0, 0.4]), source="d1"
        )
        first = sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        assert first["withdrawn_rows"] == 0 and set(mirror) == {
            ("an apple", "ein apfel"),
            ("a bread", "ein brot"),
        }

        db.ingest_embeddings("de", ["der apfel"], unit([1, 0.1, 0, 0]), source="d2")
        assert set(full(db, "en-de", -np.inf)) == {
            ("an apple", "der apfel"),
            ("a bread", "ein brot"),
        }
        sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        dropped = [json.loads(x) for x in (tmp_path / "withdrawn.jsonl").read_text().splitlines()]
        assert [(r["src"], r["tgt"], r["reason"]) for r in dropped] == [
            ("an apple", "ein apfel", "displaced")
        ]
        assert dropped[0]["src_lang"] == "en" and dropped[0]["tgt_lang"] == "de"
        assert datetime.fromisoformat(dropped[0]["withdrawn_at"]) <= datetime.now(timezone.utc)
        assert mirror == full(db, "en-de", -np.inf)

        db.remove("de", "d2")
        sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        dropped = [json.loads(x) for x in (tmp_path / "withdrawn.jsonl").read_text().splitlines()]
        assert [(r["src"], r["tgt"], r["reason"]) for r in dropped] == [
            ("an apple", "der apfel", "removed")
        ]
        assert (
            set(mirror)
            == {("an apple", "ein apfel"), ("a bread", "ein brot")}
            == set(full(db, "en-de", -np.inf))
        )

        db.remove("de", "d1")  # de is gone: the pair still reports what to drop
        summary = sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        assert summary["rows"] == 0 and summary["withdrawn_rows"] == 2 and mirror == {}
        assert sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)["withdrawn_rows"] == 0
        # a whole export of it is empty (a script exporting every pair goes on), and the
        # records stream of the HTTP API answers as the CLI does
        assert export_pairs(db, "en-de", output=str(tmp_path / "x.tsv"))["rows"] == 0
        assert list(iter_records(db, "en-de", since=datetime.now(timezone.utc))) == []
        with pytest.raises(InputError, match="no sentences in 'fr'"):  # never held
            export_pairs(db, "en-fr", output=str(tmp_path / "x.tsv"))
    finally:
        db.close()


def test_a_pair_back_under_other_ids(db_url: str, home: Path, tmp_path: Path) -> None:
    """A source removed and ingested again between two exports: its pairs come back under
    new ids, and are written, not dropped; removed, back and removed again: dropped once."""
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1)
    apple, bread = unit([1, 0, 0, 0]), unit([0, 1, 0, 0])
    mirror: Mirror = {}
    try:
        db.ingest_embeddings("en", ["an apple", "a bread"], np.vstack([apple, bread]), source="e")
        db.ingest_embeddings("de", ["ein apfel"], apple, source="d1")
        db.ingest_embeddings("de", ["ein brot"], bread, source="d2")
        sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        ids = {r["tgt"]: r["tgt_id"] for r in iter_records(db, "en-de", min_score=-np.inf)}

        db.remove("de", "d1")
        db.ingest_embeddings("de", ["ein apfel"], apple, source="d1")
        again = {r["tgt"]: r["tgt_id"] for r in iter_records(db, "en-de", min_score=-np.inf)}
        assert again["ein apfel"] != ids["ein apfel"]  # the higher id of ein brot was kept
        summary = sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        assert summary["withdrawn_rows"] == 0 and mirror == full(db, "en-de", -np.inf)

        for _ in range(2):
            db.remove("de", "d1")
            db.ingest_embeddings("de", ["ein apfel"], apple, source="d1")
        db.remove("de", "d1")
        summary = sync(db, mirror, tmp_path, pair="en-de", min_score=-np.inf)
        assert summary["withdrawn_rows"] == 1 and mirror == full(db, "en-de", -np.inf)
        assert set(mirror) == {("a bread", "ein brot")}
    finally:
        db.close()


def test_falling_below_the_cut_is_a_withdrawal(home: Path, tmp_path: Path) -> None:
    """A pair still accepted whose margin drops below the cursor's cut must be dropped."""
    db = bitextdb.init(home, model="synthetic", dim=4, k=2)
    mirror: Mirror = {}
    try:
        en = unit([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])
        db.ingest_embeddings("en", ["an apple", "a bread", "a cat"], en)
        db.ingest_embeddings(
            "de",
            ["ein apfel", "ein brot", "eine katze"],
            unit([1, 0.05, 0, 0], [0, 1, 0.05, 0], [0, 0, 1, 0.05]),
        )
        cut = full(db, "en-de", -np.inf)[("an apple", "ein apfel")] - 1e-6
        sync(db, mirror, tmp_path, pair="en-de", min_score=cut)
        assert ("an apple", "ein apfel") in mirror
        # German sentences near 'a' raise a1's neighbourhood: a-a1 stays, its margin falls
        db.ingest_embeddings(
            "de", ["noch eins", "noch zwei"], unit([1, 0.2, 0.2, 0], [1, 0.25, 0, 0.2])
        )
        now = full(db, "en-de", -np.inf)
        assert now[("an apple", "ein apfel")] < cut
        sync(db, mirror, tmp_path, pair="en-de", min_score=cut)
        dropped = [json.loads(x) for x in (tmp_path / "withdrawn.jsonl").read_text().splitlines()]
        assert ("an apple", "ein apfel", "below_min_score") in {
            (r["src"], r["tgt"], r["reason"]) for r in dropped
        }
        assert mirror == full(db, "en-de", cut)
    finally:
        db.close()


# -- formats, since, errors, CLI, library ------------------------------------------------------
def _displaced(home: Path) -> tuple[bitextdb.BitextDB, datetime]:
    db = bitextdb.init(home, model="synthetic", dim=4, k=1)
    db.ingest_embeddings("en", ["an apple", "a bread"], unit([1, 0, 0, 0], [0, 1, 0, 0]))
    db.ingest_embeddings("de", ["ein apfel", "ein brot"], unit([1, 0.5, 0.3, 0], [0, 1, 0, 0.4]))
    moment = datetime.now(timezone.utc)
    db.ingest_embeddings("de", ["der apfel"], unit([1, 0.1, 0, 0]))
    return db, moment


@pytest.mark.parametrize("fmt", ["tsv", "moses"])
def test_withdrawn_in_tsv_and_moses(home: Path, tmp_path: Path, fmt: str) -> None:
    db, moment = _displaced(home)
    try:
        summary = export_pairs(
            db,
            "de-en",
            output=str(tmp_path / "p.gz"),
            fmt=fmt,
            since=moment,
            min_score=-np.inf,
            withdrawn=str(tmp_path / "w.gz"),
        )
    finally:
        db.close()
    assert summary["rows"] == 1 and summary["withdrawn_rows"] == 1
    if fmt == "tsv":
        (line,) = read(tmp_path / "w.gz").splitlines()
        assert line.split("\t")[1:] == ["ein apfel", "an apple"]  # de-en: German on the src side
        assert float(line.split("\t")[0]) > 0
        assert summary["withdrawn_files"] == [str(tmp_path / "w.gz")]
    else:
        assert read(tmp_path / "w.de.gz") == "ein apfel\n"
        assert read(tmp_path / "w.en.gz") == "an apple\n"
        assert read(tmp_path / "p.de.gz") == "der apfel\n"


def test_iter_withdrawn_matches_the_file(home: Path, tmp_path: Path) -> None:
    db, moment = _displaced(home)
    try:
        records = list(iter_withdrawn(db, "en-de", since=moment, min_score=-np.inf, batch=1))
        export_pairs(
            db, "en-de", output=str(tmp_path / "p"), fmt="jsonl", since=moment,
            min_score=-np.inf, withdrawn=str(tmp_path / "w"),
        )  # fmt: skip
        lines = [json.loads(x) for x in (tmp_path / "w").read_text().splitlines()]
        assert records == lines and [(r["src"], r["tgt"]) for r in records] == [
            ("an apple", "ein apfel")
        ]
        later = datetime.now(timezone.utc)
        assert list(iter_withdrawn(db, "en-de", since=later, min_score=-np.inf)) == []
        with pytest.raises(InputError):
            iter_withdrawn(db, "en-de", since=moment, batch=0)
    finally:
        db.close()


def test_errors(home: Path, tmp_path: Path) -> None:
    db, moment = _displaced(home)
    out, w = str(tmp_path / "p.tsv"), str(tmp_path / "w.tsv")
    try:
        with pytest.raises(InputError, match="--cursor or --since"):
            export_pairs(db, "en-de", output=out, withdrawn=w)
        with pytest.raises(InputError, match="other files"):
            export_pairs(db, "en-de", output=out, since=moment, withdrawn=out)
        with pytest.raises(InputError, match="other files"):
            export_pairs(db, "en-de", since=moment, withdrawn="-")  # both to stdout
        with pytest.raises(InputError, match="--withdrawn PREFIX"):
            prefix = str(tmp_path / "p")
            export_pairs(db, "en-de", fmt="moses", output=prefix, since=moment, withdrawn="-")
        export_pairs(db, "en-de", output=out, cursor="nightly", min_score=1.1)
        with pytest.raises(InputError, match=r"at least 1\.1, not 1\.2"):
            export_pairs(db, "en-de", output=out, cursor="nightly", min_score=1.2)
        assert not (tmp_path / "w.tsv").exists()
        # without --min-score a cursor keeps its own cut, whatever the threshold became
        db.configure(threshold=1.3)
        export_pairs(db, "en-de", output=out, cursor="nightly", withdrawn=w)
        assert [c["min_score"] for c in list_cursors(db)] == [1.1]
        # a cursor from before min_score was kept (NULL) takes whatever comes, then keeps it
        with db.db.engine.begin() as conn:
            conn.execute(text("UPDATE export_cursors SET min_score = NULL"))
        export_pairs(db, "en-de", output=out, cursor="nightly", min_score=1.2)
        with pytest.raises(InputError, match=r"at least 1\.2, not 1\.1"):
            export_pairs(db, "en-de", output=out, cursor="nightly", min_score=1.1)
    finally:
        db.close()


def test_cli(home: Path, tmp_path: Path) -> None:
    db, _ = _displaced(home)
    db.close()
    runner = CliRunner()
    args = ["export", "--pair", "en-de", "--min-score", "-100", "--cursor", "nightly"]
    w = tmp_path / "w.jsonl"
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "p.jsonl"), "--withdrawn", str(w)])
    assert result.exit_code == 0, result.output
    assert "0 withdrawn pairs to " in result.stdout  # the first export: nothing to drop
    result = runner.invoke(
        cli, [*args, "--json", "-o", str(tmp_path / "p.jsonl"), "--withdrawn", str(w)]
    )
    assert json.loads(result.stdout)["withdrawn_rows"] == 0
    # to stdout (the summary goes to stderr then)
    since = ["export", "--pair", "en-de", "--min-score", "-100", "--since", "2000-01-01"]
    result = runner.invoke(
        cli, [*since, "--format", "jsonl", "-o", str(tmp_path / "q"), "--withdrawn", "-"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["tgt"] for x in result.stdout.splitlines()] == ["ein apfel"]
    result = runner.invoke(cli, ["export", "--pair", "en-de", "--withdrawn", str(w)])
    assert result.exit_code == 2 and "--cursor or --since" in result.output
    assert "Traceback" not in result.output


# -- schema ------------------------------------------------------------------------------------
def test_migration_adds_withdrawn_pairs_and_the_models_match_the_migrations(
    db_url: str, home: Path
) -> None:
    database = database_at(
        db_url,
        "0002",
        "INSERT INTO export_cursors (name, pair, last_exported_at, updated_at) "
        "VALUES ('old', 'de-en', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    )
    assert "withdrawn_pairs" not in inspect(database.engine).get_table_names()
    database.upgrade()
    assert database.current_revision() == database.head_revision()
    names = {c["name"] for c in inspect(database.engine).get_columns("withdrawn_pairs")}
    assert {"src_text", "tgt_text", "reason", "withdrawn_at"} <= names
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT name, min_score FROM export_cursors")).all() == [
            ("old", None)
        ]
    assert model_differences(database) == []
    database.dispose()


# -- cursors: list, drop, prune ----------------------------------------------------------------
def test_cursors_are_listed_dropped_and_their_records_pruned(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1)
    out = str(tmp_path / "p.tsv")
    start = datetime.now(timezone.utc)
    try:
        db.ingest_embeddings("en", ["an apple", "a bread"], unit([1, 0, 0, 0], [0, 1, 0, 0]))
        db.ingest_embeddings(
            "de", ["ein apfel", "ein brot"], unit([1, 0.5, 0.3, 0], [0, 1, 0, 0.4])
        )
        db.ingest_embeddings("de", ["der apfel"], unit([1, 0.1, 0, 0]), source="d2")  # w0
        export_pairs(db, "de-en", output=out, cursor="early", min_score=-np.inf)
        db.remove("de", "d2")  # w1: an apple - der apfel
        export_pairs(db, "en-de", output=out, cursor="late", min_score=-np.inf)
        listed = list_cursors(db)
        assert [(c["name"], c["pair"], c["min_score"]) for c in listed] == [
            ("early", "de-en", -np.inf),
            ("late", "de-en", -np.inf),
        ]
        assert listed[0]["last_exported_at"] < listed[1]["last_exported_at"]

        assert prune_withdrawn(db)["deleted"] == 0  # younger than a week
        dry = prune_withdrawn(db, keep=timedelta(0), dry_run=True)
        assert (dry["deleted"], dry["kept"]) == (1, 1)  # w0 is older than both cursors
        assert dry["pairs"][0]["pair"] == "de-en"
        assert prune_withdrawn(db, keep=timedelta(0), dry_run=True) == dry  # nothing went
        assert list(iter_withdrawn(db, "de-en", since=start, min_score=-np.inf))  # not refused
        done = prune_withdrawn(db, keep=timedelta(0))
        assert (done["deleted"], done["kept"], done["dry_run"]) == (1, 1, False)
        # a --since reader from before the pruned records is told so, not given half a list
        for pair in ("de-en", "en-de"):
            with pytest.raises(InputError, match="were pruned"):
                iter_withdrawn(db, pair, since=start)
            with pytest.raises(InputError, match="were pruned"):
                export_pairs(db, pair, output=out, since=start, withdrawn=str(tmp_path / "w"))
        horizon = datetime.fromisoformat(done["pairs"][0]["before"])
        later = iter_withdrawn(db, "de-en", since=horizon, min_score=-np.inf)
        assert [r["src"] for r in later] == ["der apfel"]
        # the early cursor still learns of w1
        w = tmp_path / "w.jsonl"
        export_pairs(
            db,
            "de-en",
            output=str(tmp_path / "p.jsonl"),
            cursor="early",
            min_score=-np.inf,
            withdrawn=str(w),  # both named .jsonl: JSONL, without fmt
        )
        assert [(r["src"], r["reason"]) for r in map(json.loads, w.read_text().splitlines())] == [
            ("der apfel", "removed")
        ]

        drop_cursor(db, "early")
        assert [c["name"] for c in list_cursors(db)] == ["late"]
        with pytest.raises(InputError, match="'late'"):
            drop_cursor(db, "early")
        assert prune_withdrawn(db, keep=timedelta(0))["deleted"] == 1  # late has passed w1
        with pytest.raises(InputError, match="negative"):
            prune_withdrawn(db, keep=timedelta(days=-1))
    finally:
        db.close()


def test_a_pair_that_lost_a_language_is_followed_after_its_records_are_pruned(
    home: Path, tmp_path: Path
) -> None:
    db = bitextdb.init(home, model="synthetic", dim=4, k=1)
    out, gone = str(tmp_path / "p.jsonl"), str(tmp_path / "w.jsonl")
    start = datetime.now(timezone.utc)
    try:
        db.ingest_embeddings("en", ["an apple", "a bread"], unit([1, 0, 0, 0], [0, 1, 0, 0]))
        db.ingest_embeddings("de", ["ein apfel"], unit([1, 0.2, 0, 0]), source="d")
        export_pairs(db, "en-de", output=out, cursor="c", min_score=-np.inf)
        db.remove("de", "d")  # every German sentence: the pair lost a language
        follow = {"output": out, "cursor": "c", "withdrawn": gone, "min_score": -np.inf}
        first = export_pairs(db, "en-de", **follow)
        assert (first["rows"], first["withdrawn_rows"]) == (0, 1)
        assert prune_withdrawn(db, keep=timedelta(0))["deleted"] == 1
        again = export_pairs(db, "en-de", **follow)
        assert (again["rows"], again["withdrawn_rows"]) == (0, 0)
        with pytest.raises(InputError, match="were pruned"):  # not "no sentences in 'de'"
            export_pairs(db, "en-de", output=out, since=start, withdrawn=gone, min_score=-np.inf)
    finally:
        db.close()


def test_cursors_cli(home: Path, tmp_path: Path) -> None:
    db, _ = _displaced(home)
    export_pairs(db, "en-de", output=str(tmp_path / "p.tsv"), cursor="nightly", min_score=1.5)
    db.close()
    runner = CliRunner()
    stats = json.loads(runner.invoke(cli, ["stats", "--json"]).stdout)
    assert stats["exports"] == {"cursors": 1, "withdrawn_records": 1}  # ein apfel, displaced
    assert "exports  1 cursors, 1 withdrawal records" in runner.invoke(cli, ["stats"]).stdout
    listed = runner.invoke(cli, ["cursors", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["pair"], row["min_score"]) == ("nightly", "de-en", 1.5)
    assert "nightly" in runner.invoke(cli, ["cursors", "list"]).stdout
    dry = runner.invoke(cli, ["cursors", "prune", "--keep-days", "0", "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.stdout)["deleted"] == 1  # older than nightly
    pruned = runner.invoke(cli, ["cursors", "prune", "--keep-days", "0"])
    assert pruned.exit_code == 0 and pruned.stdout.startswith("deleted 1 withdrawal records")
    since = ["export", "--pair", "de-en", "-o", str(tmp_path / "p.tsv")]
    since += ["--since", "2026-01-01T00:00:00"]
    refused = runner.invoke(cli, [*since, "--withdrawn", str(tmp_path / "w.tsv")])
    assert refused.exit_code == 2 and "were pruned" in refused.output, refused.output
    assert runner.invoke(cli, since).exit_code == 0  # the pairs alone are all there
    for bad in ("-1", "nan", "1e12"):
        refused = runner.invoke(cli, ["cursors", "prune", "--keep-days", bad])
        assert refused.exit_code == 2 and "--keep-days" in refused.output, refused.output
    unknown = runner.invoke(cli, ["cursors", "drop", "weekly"])
    assert unknown.exit_code == 2 and "nightly" in unknown.output
    assert "Traceback" not in unknown.output
    dropped = runner.invoke(cli, ["cursors", "drop", "nightly"])
    assert (
        dropped.exit_code == 0
        and "no export cursors" in runner.invoke(cli, ["cursors", "list"]).stdout
    )
