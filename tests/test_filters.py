"""Export filters: identical sides and length ratios, in every export path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import bitextdb
from bitextdb.cli import cli
from bitextdb.errors import InputError
from bitextdb.evaluate import evaluate
from bitextdb.export import export_pairs, iter_records
from bitextdb.filters import PairFilter

EN = ["Hello world", "The cat sleeps on the warm mat today", "Yes", "Good morning"]
DE = ["hello WORLD", "Ja", "Die Katze", "Guten Morgen"]
# en i pairs with de i: vectors are made so (one axis each)
RATIO = {  # longer / shorter, in characters
    ("Hello world", "hello WORLD"): 1.0,
    ("The cat sleeps on the warm mat today", "Ja"): 18.0,
    ("Yes", "Die Katze"): 3.0,
    ("Good morning", "Guten Morgen"): 1.0,
}


def test_the_filter_alone() -> None:
    keep = PairFilter(max_length_ratio=3, skip_identical=True)
    assert not keep.keep("Hello world", "hello WORLD")
    assert keep.keep("Yes", "Die Katze")  # exactly 3x
    assert not keep.keep("Yes", "Die Katzen")
    assert keep.keep("", "a") and not keep.keep("", "")  # two empty sides are identical
    assert PairFilter(max_length_ratio=1).keep("", "a")  # an empty side counts as one char
    assert PairFilter().keep("same", "same") and not PairFilter().active
    assert keep.describe() == "--max-length-ratio 3 --skip-identical"
    assert (
        PairFilter.from_dict(keep.as_dict()) == keep and PairFilter.from_dict(None) == PairFilter()
    )
    for bad in (0.5, math.nan):
        with pytest.raises(InputError, match="at least 1"):
            PairFilter(max_length_ratio=bad)


@pytest.fixture
def db(db_url: str, home: Path):  # type: ignore[no-untyped-def]
    database = bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1)
    eye = np.eye(4, dtype=np.float32)
    database.ingest_embeddings("en", EN, eye)
    database.ingest_embeddings("de", DE, eye + 0.01)
    yield database
    database.close()


def _pairs(path: Path) -> set[tuple[str, str]]:
    return {(r["src"], r["tgt"]) for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("margin", ["ratio", "distance"])
def test_export_filters(db: bitextdb.BitextDB, tmp_path: Path, margin: str) -> None:
    out = tmp_path / "p.jsonl"
    everything = export_pairs(
        db, "en-de", output=str(out), fmt="jsonl", min_score=-np.inf, margin=margin
    )
    assert everything["rows"] == 4 and everything["filtered"] == 0
    assert _pairs(out) == set(RATIO)
    for options, kept in (
        ({"skip_identical": True}, {p for p in RATIO if p[0] != "Hello world"}),
        ({"max_length_ratio": 3.0}, {p for p, r in RATIO.items() if r <= 3}),
        ({"max_length_ratio": 2.0, "skip_identical": True}, {("Good morning", "Guten Morgen")}),
    ):
        summary = export_pairs(
            db, "en-de", output=str(out), fmt="jsonl", min_score=-np.inf, margin=margin, **options
        )
        assert _pairs(out) == kept, options
        assert (summary["rows"], summary["filtered"]) == (len(kept), 4 - len(kept))
        if margin == "ratio":
            records = iter_records(db, "de-en", min_score=-np.inf, **options)
            assert {(r["tgt"], r["src"]) for r in records} == kept


def test_a_cursor_keeps_its_filter(db: bitextdb.BitextDB, tmp_path: Path) -> None:
    out = str(tmp_path / "p.tsv")
    export_pairs(db, "en-de", output=out, cursor="c", min_score=-np.inf, skip_identical=True)
    with pytest.raises(InputError, match="--skip-identical, not none"):
        export_pairs(db, "en-de", output=out, cursor="c", min_score=-np.inf)
    with pytest.raises(InputError, match="not --max-length-ratio 2 --skip-identical"):
        export_pairs(
            db, "en-de", output=out, cursor="c", min_score=-np.inf, skip_identical=True,
            max_length_ratio=2,
        )  # fmt: skip
    again = export_pairs(
        db, "en-de", output=out, cursor="c", min_score=-np.inf, skip_identical=True
    )
    assert again["rows"] == 0


def test_cli_and_http(db: bitextdb.BitextDB, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from bitextdb.serve import create_app

    with TestClient(create_app(db, api_key=None)) as client:
        response = client.get(
            "/export",
            params={
                "pair": "en-de",
                "min_score": -1e9,
                "skip_identical": "true",
                "max_length_ratio": 3,
            },
        )
        assert response.status_code == 200, response.text
        got = {(r["src"], r["tgt"]) for r in map(json.loads, response.text.splitlines())}
        assert got == {("Yes", "Die Katze"), ("Good morning", "Guten Morgen")}
        assert (
            client.get("/export", params={"pair": "en-de", "max_length_ratio": 0.5}).status_code
            == 400
        )
    db.close()
    runner = CliRunner()
    args = ["export", "--pair", "en-de", "--min-score", "-100", "-o", str(tmp_path / "p.tsv")]
    result = runner.invoke(cli, [*args, "--skip-identical", "--max-length-ratio", "3"])
    assert result.exit_code == 0, result.output
    assert "2 filtered out" in result.stdout
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in lines) == ["Good morning", "Yes"]
    bad = runner.invoke(cli, [*args, "--max-length-ratio", "0"])
    assert bad.exit_code == 2 and "at least 1" in bad.output and "Traceback" not in bad.output
    listed = runner.invoke(cli, [*args, "--cursor", "n", "--skip-identical"])
    assert listed.exit_code == 0
    assert "filters --skip-identical" in runner.invoke(cli, ["cursors", "list"]).stdout


def test_evaluate_what_a_filtered_export_writes(db: bitextdb.BitextDB, tmp_path: Path) -> None:
    """The identical pair is not in the gold file: skipping it lifts precision to 1."""
    gold = tmp_path / "gold.tsv"
    gold.write_text("".join(f"{a}\t{b}\n" for a, b in RATIO if a != "Hello world"))
    plain = evaluate(db, "en-de", gold)
    assert (plain["accepted"], plain["correct"], plain["filtered"]) == (4, 3, 0)
    assert plain["best"]["f1"] == pytest.approx(2 * 0.75 / 1.75)
    skipped = evaluate(db, "en-de", gold, skip_identical=True)
    assert (skipped["accepted"], skipped["correct"], skipped["filtered"]) == (3, 3, 1)
    assert skipped["best"]["f1"] == 1.0
    flipped = tmp_path / "flipped.tsv"  # the other direction, and the length filter too
    flipped.write_text("".join(f"{b}\t{a}\n" for a, b in RATIO if a != "Hello world"))
    both = evaluate(db, "de-en", flipped, skip_identical=True, max_length_ratio=3)
    assert (both["accepted"], both["correct"], both["filtered"]) == (2, 2, 2)
    assert both["best"]["recall"] == pytest.approx(2 / 3)
    db.close()
    result = CliRunner().invoke(
        cli, ["evaluate", "--pair", "en-de", "--gold", str(gold), "--skip-identical"]
    )
    assert result.exit_code == 0, result.output
    assert "(1 more filtered out)" in result.stdout


def test_an_infinite_ratio_is_no_limit_and_a_cursor_keeps_it(
    db: bitextdb.BitextDB, tmp_path: Path
) -> None:
    """PostgreSQL's JSON has no infinity: a cursor saved with `--max-length-ratio inf`
    failed there after its file was written."""
    assert PairFilter(max_length_ratio=math.inf) == PairFilter()
    out = str(tmp_path / "p.tsv")
    first = export_pairs(db, "en-de", output=out, cursor="c", min_score=-np.inf,
                         max_length_ratio=math.inf)  # fmt: skip
    assert first["rows"] == 4
    again = export_pairs(db, "en-de", output=out, cursor="c", min_score=-np.inf)
    assert again["rows"] == 0
