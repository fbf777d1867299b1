"""Language identification at ingest (``--lid``): sentences of other languages skipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import bitextdb
from bitextdb import language_id
from bitextdb.cli import cli
from bitextdb.errors import InputError
from bitextdb.language_id import language_check
from bitextdb.readers import ReadStats, read_lines
from bitextdb.segment import sentence_splitter

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(lang: str) -> list[str]:
    """The example corpus of ``lang``: real sentences, one a line."""
    return [x for x in (EXAMPLES / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if x]


def test_the_check_keeps_its_language_and_drops_clear_others() -> None:
    de = language_check("de")
    assert all(de(s) for s in example("de"))  # no German sentence of the examples lost
    english = [s for s in example("en") if not de(s)]
    assert len(english) >= 0.9 * len(example("en"))  # 90 % or more found out
    assert de("Danke.")  # too short to tell: kept
    # a crawl's repeated boilerplate is classified once
    before = de.keep.cache_info().hits  # type: ignore[attr-defined]
    assert not de("Click here to accept all cookies.") and not de(
        "Click here to accept all cookies."
    )
    assert de.keep.cache_info().hits == before + 1  # type: ignore[attr-defined]
    # what counts as the language: another code accepted, a region or script aside
    hr = language_check("hr", accept=["sr", "bs"])
    assert hr("Kuća je stara i vrt je velik.")
    serbian = "Ово је стара кућа и врт је велики."  # py3langid: sr, 0.997
    assert hr(serbian) and not language_check("hr")(serbian)
    assert language_check("pt-BR")("A casa é velha e o jardim é grande.")
    assert language_check("nb")("Huset er gammelt og hagen er stor.")  # py3langid's "no"
    # a stricter threshold drops fewer
    loose, strict = language_check("de", 0.5), language_check("de", 0.999999)
    assert sum(not strict(s) for s in example("en")) < sum(not loose(s) for s in example("en"))


@pytest.mark.parametrize(
    ("lang", "threshold", "message"),
    [
        ("xx", 0.5, "py3langid does not know 'xx'"),
        ("de", 0, "above 0 and at most 1"),
        ("de", 1.5, "above 0 and at most 1"),
        ("de", True, "must be a number"),
    ],
)
def test_bad_languages_and_thresholds_are_input_errors(
    lang: str, threshold: float, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        language_check(lang, threshold)


def test_without_py3langid_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    language_id._identifier.cache_clear()
    monkeypatch.setitem(sys.modules, "py3langid.langid", None)  # import fails
    try:
        with pytest.raises(InputError, match=r"pip install 'bitextdb\[lid\]'"):
            language_check("de")
    finally:
        language_id._identifier.cache_clear()


def test_reading_counts_the_sentences_of_other_languages(tmp_path: Path) -> None:
    de = example("de")
    en = [e for e in example("en") if len(e) > 30]  # long enough to tell ("Thank you." is not)
    path = tmp_path / "mixed.txt"
    # paragraphs of a German and an English sentence: split, the English ones go
    path.write_text("\n".join(f"{d} {e}" for d, e in zip(de[:10], en[:10])), encoding="utf-8")
    stats = ReadStats()
    split = sentence_splitter("de")
    got = [
        x.text for x in read_lines(path, split=split, language=language_check("de"), stats=stats)
    ]
    assert got == de[:10]
    assert (stats.lines, stats.sentences, stats.wrong_language) == (10, 20, 10)
    assert stats.skipped() == {"wrong_language": 10}


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_processes_judge_as_this_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """A long file's sentences judged by worker processes, in chunks, in order: the same
    lines kept and the same count skipped as judged here, one by one."""
    monkeypatch.setattr(language_id, "POOL_AFTER", 7)
    monkeypatch.setattr(language_id, "CHUNK", 5)
    mixed = [s for pair in zip(example("de"), example("en")) for s in pair]
    lines = [f"{s} ({i})" for i, s in enumerate(mixed)]  # each distinct
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_by_one = language_check("de", workers=0)
    want = [x for x in lines if one_by_one(x)]
    assert 0 < len(want) < len(lines)
    stats = ReadStats()
    check = language_check("de", workers=workers)
    got = [x.text for x in read_lines(path, language=check, stats=stats)]
    assert got == want and stats.wrong_language == len(lines) - len(want)
    # judged here: all of them, or only those before the workers start
    judged_here = check.keep.cache_info().misses  # type: ignore[attr-defined]
    assert judged_here == (len(lines) if workers == 0 else 7)
    # stopped early (a reader that has what it wants): nothing hangs, nothing is left
    early = read_lines(path, language=language_check("de", workers=workers))
    assert [x.text for _, x in zip(range(20), early)] == want[:20]
    early.close()


def test_the_number_of_workers_follows_the_machine_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(language_id.os, "sched_getaffinity", lambda _: set(range(16)))
    assert language_id.default_workers() == 4
    monkeypatch.setattr(language_id.os, "sched_getaffinity", lambda _: {0, 1})
    assert language_id.default_workers() == 1
    monkeypatch.setenv("BITEXTDB_LID_WORKERS", "0")  # judged in the reading thread
    assert language_id.default_workers() == 0
    monkeypatch.setenv("BITEXTDB_LID_WORKERS", "3")
    assert language_id.default_workers() == 3 and language_check("de").workers == 3
    monkeypatch.setenv("BITEXTDB_LID_WORKERS", "many")
    with pytest.raises(InputError, match="BITEXTDB_LID_WORKERS"):
        language_check("de")


def test_cli_and_library_ingest_with_lid(home: Path, static_model: Path, tmp_path: Path) -> None:
    de = [d for d in example("de") if d != "Danke."]
    en = [e for e in example("en") if len(e) > 30]
    path = tmp_path / "crawl.de.txt"
    path.write_text("\n".join([*de[:20], *en[:5], "Danke."]) + "\n", encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["-q", "init", "--model", str(static_model)]).exit_code == 0
    result = runner.invoke(
        cli, ["-q", "ingest", str(path), "--lang", "de", "--lid", "--no-mine", "--json"]
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["ingested"]
    assert report["skipped"] == {"wrong_language": 5} and report["new"] == 21
    assert (
        "5 wrong_language"
        in runner.invoke(
            cli, ["-q", "ingest", str(path), "--lang", "de", "--lid", "--no-mine"]
        ).output
    )
    # threshold and accepted languages from the command line
    loose = runner.invoke(
        cli,
        ["-q", "ingest", str(path), "--lang", "de", "--lid-accept", "en", "--json", "--no-mine"],
    )
    assert json.loads(loose.stdout)["ingested"][0]["skipped"] == {}
    for bad, code, words in (
        (["--lid-threshold", "1.5"], 2, "0<x<=1"),
        (["--lid-accept", "qq"], 2, "py3langid does not know 'qq'"),
    ):
        result = runner.invoke(cli, ["ingest", str(path), "--lang", "de", *bad])
        assert result.exit_code == code and words in result.output, result.output
        assert "Traceback" not in result.output
    with bitextdb.open(home) as db:
        assert db.stats()["languages"]["de"]["sentences"] == 26  # the accept run added the 5
        summary = db.ingest_texts("es", [*example("es")[:4], en[0]], lid=0.5, mine=False)
        assert summary["ingested"][0]["skipped"] == {"wrong_language": 1}


def test_http_ingest_with_lid(home: Path, static_model: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from bitextdb.serve import create_app

    with bitextdb.init(home, model=str(static_model)) as db:
        client = TestClient(create_app(db, api_key=None))
        body = {"lang": "en", "sentences": [*example("en")[:3], example("de")[0]], "mine": False}
        response = client.post("/ingest", json={**body, "lid": 0.5})
        assert response.json()["ingested"][0]["skipped"] == {"wrong_language": 1}
        response = client.post("/ingest", json={**body, "lid": 0.5, "lid_accept": ["de"]})
        assert response.json()["ingested"][0]["skipped"] == {}
        assert client.post("/ingest", json={**body, "lid": 2}).status_code == 422
