"""Evaluation against gold pairs: P/R/F1 by hand, external ids, plots, bad gold files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import text

import bitextdb
from bitextdb.cli import cli
from bitextdb.evaluate import evaluate
from tests.reference import random_unit

N = 24


def planted(n: int = N, noise: float = 0.9, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """en[i] and de[i] are noisy copies for even i; odd rows are unrelated."""
    en = random_unit(n, 8, seed)
    de = random_unit(n, 8, seed + 1).astype(np.float64)
    rng = np.random.default_rng(seed)
    de[::2] = en[::2] + noise * rng.standard_normal((len(de[::2]), 8)) / np.sqrt(8)
    de /= np.linalg.norm(de, axis=1, keepdims=True)
    return en, de.astype(np.float32)


def hand_scores(
    walk: list[tuple[object, object, float]], gold: set[tuple[object, object]], missed: int = 0
) -> tuple[dict, list[tuple[float, int, int, float, float, float]]]:
    """Best F1 and P/R/F1 at every distinct margin, in plain loops over the accepted pairs;
    ``missed`` gold pairs name sentences not stored (bucc2018.py counts them in recall)."""
    rows = []
    best = {"threshold": None, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    for t in sorted({m for _, _, m in walk}, reverse=True):
        kept = [(a, b) for a, b, m in walk if m >= t]
        correct = sum(1 for p in kept if p in gold)
        p = correct / len(kept)
        r = correct / (len(gold) + missed)
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append((t, len(kept), correct, p, r, f))
        if f > best["f1"]:
            best = {"threshold": t, "precision": p, "recall": r, "f1": f}
    return best, rows


def accepted_walk(db: bitextdb.BitextDB) -> list[tuple[int, int, float]]:
    """(en id, de id, margin) of the accepted pairs (stored as de-en)."""
    with db.db.session() as s:
        rows = s.execute(
            text("SELECT src_id, tgt_id, margin FROM pairs WHERE accepted AND src_lang = 'de'")
        ).all()
    return [(en, de, m) for de, en, m in rows]


def ids_of(db: bitextdb.BitextDB, lang: str) -> dict[str, int]:
    with db.db.session() as s:
        return dict(
            s.execute(text("SELECT text, id FROM sentences WHERE lang = :l"), {"l": lang}).all()
        )


def build(home: Path, db_url: str | None = None) -> bitextdb.BitextDB:
    en, de = planted()
    db = bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=3)
    db.ingest_embeddings("en", [f"the english sentence {i}" for i in range(N)], en)
    db.ingest_embeddings("de", [f"der deutsche satz {i}" for i in range(N)], de)
    return db


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_f1_equals_a_hand_computation(db_url: str, home: Path, tmp_path: Path) -> None:
    db = build(home, db_url)
    try:
        gold_lines = [f"the english sentence {i}\tder deutsche satz {i}" for i in range(0, N, 2)]
        # matched after normalisation (extra spaces), plus lines matching nothing
        gold_lines += ["  the english   sentence 1\tder deutsche satz 1", "", "nothing\there"]
        gold_lines += ["the english sentence 3\tnicht vorhanden"]
        gold = write(tmp_path / "gold.tsv", gold_lines)
        result = evaluate(db, "en-de", gold, steps=5)

        en, de = ids_of(db, "en"), ids_of(db, "de")
        pairs = {
            (en[f"the english sentence {i}"], de[f"der deutsche satz {i}"])
            for i in [*range(0, N, 2), 1]
        }
        walk = accepted_walk(db)
        best, rows = hand_scores(walk, pairs, missed=2)
        with db.db.session() as s:
            candidates = s.execute(text("SELECT count(*) FROM pairs")).scalar_one()
    finally:
        db.close()
    assert 0 < best["f1"] < 1  # neither trivial nor perfect: the walk matters
    assert result["pair"] == "en-de"
    assert result["gold_pairs"] == len(pairs) == N // 2 + 1
    assert result["gold_unmatched"] == 2
    assert result["accepted"] == len(walk) and result["candidates"] == candidates
    assert result["best"]["threshold"] == pytest.approx(best["threshold"])
    for key in ("precision", "recall", "f1"):
        assert result["best"][key] == pytest.approx(best[key])
    # the table: at most `steps` thresholds, from the highest margin down to the lowest
    table = result["table"]
    assert 1 < len(table) <= 5
    assert table[0]["threshold"] == pytest.approx(max(m for *_, m in walk))
    assert table[-1]["threshold"] == pytest.approx(min(m for *_, m in walk))
    by_threshold = {round(t, 9): row for t, *row in rows}
    for row in table:
        n, correct, p, r, f = by_threshold[round(row["threshold"], 9)]
        assert (row["pairs"], row["correct"]) == (n, correct)
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f))


def test_direction_of_the_gold_file(home: Path, tmp_path: Path) -> None:
    db = build(home)
    try:
        lines = [f"the english sentence {i}\tder deutsche satz {i}" for i in range(0, N, 2)]
        en_de = evaluate(db, "en-de", write(tmp_path / "en-de.tsv", lines))
        swapped = ["\t".join(reversed(line.split("\t"))) for line in lines]
        de_en = evaluate(db, "de-en", write(tmp_path / "de-en.tsv", swapped))
        # the wrong way round matches nothing: said, not scored as 0
        with pytest.raises(bitextdb.InputError, match="are its columns de then en"):
            evaluate(db, "de-en", tmp_path / "en-de.tsv")
        with pytest.raises(bitextdb.InputError, match="holds no gold pairs"):
            evaluate(db, "de-en", write(tmp_path / "empty.tsv", ["", " "]))
    finally:
        db.close()
    assert en_de["best"] == de_en["best"] and en_de["best"]["f1"] > 0
    assert de_en["pair"] == "de-en"


def test_external_id_gold(home: Path, tmp_path: Path) -> None:
    """BUCC style: sentences ingested from ``id<TAB>text`` files, gold given as ids."""
    en, de = planted(seed=11)
    perm = np.random.default_rng(0).permutation(N)  # de row j is stored at position perm[j]
    files = {}
    for lang, vecs, order in (("en", en, np.arange(N)), ("de", de, perm)):
        rows = [f"{lang}-{int(order[j]):06d}\t{lang} text {int(order[j])}" for j in range(N)]
        sorted_rows = sorted(range(N), key=lambda j: int(order[j]))
        write(tmp_path / f"{lang}.tsv", [rows[j] for j in sorted_rows])
        np.save(tmp_path / f"{lang}.npy", vecs[sorted_rows])
        files[lang] = tmp_path / f"{lang}.tsv"
    db = bitextdb.init(home, model="synthetic", dim=8, k=3)
    try:
        for lang in ("en", "de"):
            db.ingest(files[lang], lang, embeddings=tmp_path / f"{lang}.npy", column=2, id_column=1)
        gold_lines = [f"de-{int(perm[i]):06d}\ten-{i:06d}" for i in range(0, N, 2)]
        gold_lines.append(f"de text {int(perm[1])}\ten-000001")  # text on one side, id on the other
        gold_lines.append("de-999999\ten-000003")
        result = evaluate(db, "de-en", write(tmp_path / "gold.tsv", gold_lines))
        bom = tmp_path / "bom.tsv"  # saved by a Windows editor: the first id is whole
        bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "gold.tsv").read_bytes())
        assert evaluate(db, "de-en", bom)["gold_pairs"] == result["gold_pairs"]
        with db.db.session() as s:
            ext = dict(s.execute(text("SELECT sentence_id, ext_id FROM occurrences")).all())
        walk = [(ext[d], ext[e], m) for e, d, m in accepted_walk(db)]
    finally:
        db.close()
    gold = {tuple(line.split("\t")) for line in gold_lines[:-2]} | {
        (f"de-{int(perm[1]):06d}", "en-000001")
    }
    best, _ = hand_scores(walk, gold, missed=1)
    assert result["gold_pairs"] == N // 2 + 1 and result["gold_unmatched"] == 1
    assert best["f1"] > 0.3
    assert result["best"]["f1"] == pytest.approx(best["f1"])
    assert result["best"]["threshold"] == pytest.approx(best["threshold"])


def test_plot_and_cli(home: Path, tmp_path: Path) -> None:
    build(home).close()
    gold = write(
        tmp_path / "gold.tsv",
        [f"the english sentence {i}\tder deutsche satz {i}" for i in range(0, N, 2)],
    )
    png = tmp_path / "margins.png"
    runner = CliRunner()
    args = ["-q", "evaluate", "--pair", "en-de", "--gold", str(gold)]
    result = runner.invoke(cli, [*args, "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name, magic in (("m.pdf", b"%PDF"), ("m.svg", b"<?xml")):  # the name says which
        assert runner.invoke(cli, [*args, "--plot", str(tmp_path / name)]).exit_code == 0
        assert (tmp_path / name).read_bytes().startswith(magic)
    refused = runner.invoke(cli, [*args, "--plot", str(tmp_path / "m.jpg")])
    assert refused.exit_code == 2 and "not .jpg" in refused.output
    assert "best: F1" in result.stdout and "threshold" in result.stdout
    data = json.loads(runner.invoke(cli, [*args, "--json", "--steps", "3"]).stdout)
    assert data["gold_pairs"] == N // 2 and len(data["table"]) <= 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_matplotlib_names_the_extra(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = build(home)
    gold = write(tmp_path / "gold.tsv", ["the english sentence 0\tder deutsche satz 0"])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    try:
        with pytest.raises(bitextdb.ConfigError, match=r"bitextdb\[plot\]"):
            evaluate(db, "en-de", gold, plot=tmp_path / "x.png")
    finally:
        db.close()
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("line", "needle"),
    [("only one column", "line 2"), ("a\tb\tc", "got 3"), ("a\t ", "two tab-separated")],
)
def test_malformed_gold(home: Path, tmp_path: Path, line: str, needle: str) -> None:
    db = build(home)
    gold = write(tmp_path / "gold.tsv", ["the english sentence 0\tder deutsche satz 0", line])
    try:
        with pytest.raises(bitextdb.InputError, match=needle):
            evaluate(db, "en-de", gold)
        with pytest.raises(bitextdb.InputError, match="no sentences in 'fr'"):
            evaluate(db, "en-fr", tmp_path / "gold.tsv")
    finally:
        db.close()
    result = CliRunner().invoke(cli, ["-q", "evaluate", "--pair", "en-de", "--gold", str(gold)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Error:" in result.output and needle in result.output
