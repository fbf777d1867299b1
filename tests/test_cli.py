"""The ``bitextdb`` command line: happy paths, and bad input that fails cleanly."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

import bitextdb
from bitextdb.cli import cli
from bitextdb.db import never_initialised
from tests.models import build_static_crosslingual

EN = ["the cat sleeps", "a dog runs in the street", "my friend reads a book"]
DE = ["die katze schläft", "ein hund läuft auf der straße", "mein freund liest ein buch"]
README = Path(__file__).resolve().parent.parent / "README.md"


def invoke(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["-q", *args], input=input)


def ok(*args: str, input: str | bytes | None = None) -> Result:
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def as_json(result: Result) -> object:
    return json.loads(result.stdout)


def stats() -> dict:
    return as_json(ok("stats", "--json"))  # type: ignore[return-value]


def assert_clean_error(result: Result, *needles: str) -> str:
    """Non-zero exit, exactly one line starting with 'Error:', no traceback; the line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def initialised(home: Path, tiny_bert: Path, tmp_path: Path) -> Path:
    """A home with the tiny model and three English sentences; returns the English file."""
    ok("init", "--model", str(tiny_bert), "--dim", "32")
    en = write_lines(tmp_path / "en.txt", EN)
    ok("ingest", "--lang", "en", str(en))
    return en


def test_only_the_documented_variables_are_read_from_the_environment(
    initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """click's automatic BITEXTDB_<COMMAND>_<OPTION> variables are off: one left set in a
    shell silently changed what later commands did."""
    monkeypatch.setenv("BITEXTDB_STATS_JSON", "1")
    monkeypatch.setenv("BITEXTDB_CONFIG_THRESHOLD", "1.5")
    assert not ok("stats").stdout.lstrip().startswith("{")
    ok("config")
    assert as_json(ok("stats", "--json"))["settings"]["threshold"] == 1.0  # type: ignore[index]


# -- happy paths -------------------------------------------------------------------------------
def test_version() -> None:
    result = ok("--version")
    assert bitextdb.__version__ in result.output


def test_init_ingest_mine_stats_config(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    init = as_json(ok("--home", str(home), "init", "--model", str(tiny_bert), "--json"))
    assert init["model"]["name"] == str(tiny_bert)  # type: ignore[index]
    assert init["model"]["dim"] == 32  # type: ignore[index]  # read from the model
    assert (home / "bitextdb.sqlite").is_file()

    en = write_lines(tmp_path / "en.txt", [*EN, EN[0]])
    de = write_lines(tmp_path / "de.txt", DE)
    report = as_json(ok("ingest", "--lang", "en", "--no-mine", "--json", str(en)))
    (r,) = report["ingested"]  # type: ignore[index]
    assert (r["lang"], r["read"], r["new"], r["duplicates"]) == ("en", 4, 3, 1)
    assert "mined" not in report  # type: ignore[operator]
    text = ok("ingest", "--lang", "de", "--no-mine", str(de)).stdout
    assert "new 3" in text and "[de]" in text and "encoded 3 in" in text

    mined = as_json(ok("mine", "--json"))
    assert isinstance(mined, list) and len(mined) == 1
    assert mined[0]["pair"] == "de-en"
    assert mined[0]["new"] == {"de": 3, "en": 3}
    assert 1 <= mined[0]["pairs"] <= 6
    assert as_json(ok("mine", "--json"))[0]["new"] == {"de": 0, "en": 0}  # type: ignore[index]
    # several pairs with commas, as config --pairs takes them (it named 'de-en,en' a code)
    assert [m["pair"] for m in as_json(ok("mine", "--pair", "en-de, de-en", "--json"))] == ["de-en"]
    assert [m["pair"] for m in as_json(ok("mine", "--pair", "de-en,", "--json"))] == ["de-en"]
    assert_clean_error(invoke("mine", "--pair", " , "), "names no language pair")

    s = stats()
    assert {"languages", "pairs", "model", "stores"} <= set(s)
    assert s["languages"]["en"]["sentences"] == 3
    assert s["languages"]["en"]["sources"] == 1
    assert s["languages"]["de"]["sentences"] == 3
    assert isinstance(s["pairs"]["de-en"]["pairs"], int)
    assert s["pairs"]["de-en"]["pending"] == {"de": 0, "en": 0}
    assert s["model"]["name"] == str(tiny_bert)
    assert s["stores"]["vector_backend"] == "qdrant-edge"
    assert s["stores"]["schema"] is not None

    config = as_json(ok("config", "--threshold", "1.1", "--json"))
    assert config["threshold"] == pytest.approx(1.1)  # type: ignore[index]
    assert stats()["pairs"]["de-en"]["threshold"] == pytest.approx(1.1)
    assert as_json(ok("config", "--json"))["threshold"] == pytest.approx(1.1)  # type: ignore[index]

    status = as_json(ok("db", "status", "--json"))
    assert status["up_to_date"] is True  # type: ignore[index]
    assert status["current"] == status["head"]  # type: ignore[index]
    assert "revision" in ok("db", "upgrade").stdout

    # init again with the same model: harmless
    before = stats()
    ok("init", "--model", str(tiny_bert))
    assert stats() == before


def test_ingest_and_mine_in_one_go(initialised: Path, tmp_path: Path) -> None:
    de = write_lines(tmp_path / "de.txt", DE)
    result = as_json(ok("ingest", "--lang", "de", "--json", str(de)))
    assert [m["pair"] for m in result["mined"]] == ["de-en"]  # type: ignore[index]
    assert "mined de-en" in ok("ingest", "--lang", "de", str(de)).stdout
    # a bad file after a good one: the error, and for scripts the good one's report
    more = write_lines(tmp_path / "more.txt", ["ein ganz neuer satz"])
    failed = invoke("ingest", "--lang", "de", "--json", str(more), str(tmp_path / "nope.txt"))
    assert_clean_error(failed, "No such file", "more.txt")
    done = json.loads(failed.stdout)["ingested"]
    assert [(r["source"], r["new"]) for r in done] == [(str(more), 1)]


def test_stdin_and_formats(initialised: Path, tmp_path: Path) -> None:
    report = as_json(ok("ingest", "--lang", "de", "--json", "--no-mine", "-", input=DE[0] + "\n"))
    assert report["ingested"][0]["source"].startswith("stdin@")  # type: ignore[index]
    tsv = write_lines(tmp_path / "de.tsv", ["id\ttext", f"x1\t{DE[1]}", f"x2\t{DE[2]}"])
    result = ok("ingest", "--lang", "de", "--column", "text", "--id-column", "id", str(tsv))
    assert "new 2" in result.stdout
    jsonl = tmp_path / "de.jsonl"
    jsonl.write_text(json.dumps({"t": "neuer satz hier"}) + "\n", encoding="utf-8")
    ok("ingest", "--lang", "de", "--field", "t", "--no-mine", str(jsonl))
    numbered = write_lines(tmp_path / "n.tsv", ["1\tnoch ein satz"])
    ok("ingest", "--lang", "de", "--column", "2", "--no-mine", str(numbered))
    assert stats()["languages"]["de"]["sentences"] == 5


def test_invalid_utf8_lines_are_counted(initialised: Path, tmp_path: Path) -> None:
    before = stats()["languages"]["en"]["sentences"]
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"first good line\nbad \xff\xfe line\nsecond good line\n")
    report = as_json(ok("ingest", "--lang", "en", "--json", str(path)))
    (r,) = report["ingested"]  # type: ignore[index]
    assert r["skipped"] == {"invalid_utf8": 1}
    assert r["new"] == 2
    assert stats()["languages"]["en"]["sentences"] == before + 2
    assert "1 invalid_utf8" in ok("ingest", "--lang", "en", str(path)).stdout


def test_empty_file_adds_nothing(initialised: Path, tmp_path: Path) -> None:
    before = stats()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    report = as_json(ok("ingest", "--lang", "en", "--json", str(empty)))
    (r,) = report["ingested"]  # type: ignore[index]
    assert (r["read"], r["new"], r["encoded"]) == (0, 0, 0)
    after = stats()
    assert after["languages"]["en"]["sentences"] == before["languages"]["en"]["sentences"]


# -- bad input -------------------------------------------------------------------------------
def _bad_case(name: str, tmp_path: Path, good: Path) -> tuple[list[str], tuple[str, ...]]:
    """The arguments of a bad command and words its error line must contain."""
    if name == "missing":
        return ["ingest", "--lang", "en", str(tmp_path / "nope.txt")], ("No such file",)
    if name == "directory":
        return ["ingest", "--lang", "en", str(tmp_path)], ("directory",)
    if name == "binary":
        blob = tmp_path / "blob.txt"
        blob.write_bytes(bytes(range(256)) * 64)
        return ["ingest", "--lang", "en", str(blob)], ("binary",)
    if name == "format":
        return ["ingest", "--lang", "en", "--format", "xml", str(good)], ("--format",)
    if name == "lang":
        return ["ingest", "--lang", "en de", str(good)], ("language code",)
    if name == "lang-newline":  # "$" alone would match before the newline
        return ["ingest", "--lang", "es\n", str(good)], ("language code",)
    if name == "column-superscript":  # a digit to str.isdigit(), not to int()
        tsv = write_lines(tmp_path / "x.tsv", ["id\tsentence", "1\tein satz"])
        return ["ingest", "--lang", "de", "--column", "\u00b2", str(tsv)], ("\u00b2", "columns")
    if name == "column":
        tsv = write_lines(tmp_path / "x.tsv", ["id\tsentence", "1\tein satz"])
        return ["ingest", "--lang", "de", "--column", "text", str(tsv)], ("text", "columns")
    if name == "model":
        return ["ingest", "--lang", "en", "--model", "other-model", str(good)], ("other-model",)
    if name == "embeddings":
        npy = tmp_path / "e.npy"
        np.save(npy, np.ones((7, 32), dtype=np.float32))
        return ["ingest", "--lang", "en", "--embeddings", str(npy), str(good)], ("rows",)
    if name == "pair":
        return ["mine", "--pair", "en-en"], ("itself",)
    if name == "config":
        return ["config", "--max-chars", "1"], ("min_chars",)
    if name == "init-model":
        return ["init", "--model", "other-model"], ("other-model",)
    if name in ("link-loop", "remove-loop"):
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        loop = str(tmp_path / "loop")
        return {
            "link-loop": ["ingest", "--lang", "en", loop],
            "remove-loop": ["remove", "--lang", "en", "--source", loop],
        }[name], ("Cannot resolve", "loop")
    if name == "file-name-not-utf8":
        odd = tmp_path / os.fsdecode(b"caf\xe9.txt")
        odd.write_text("the dog\n", encoding="utf-8")
        return ["ingest", "--lang", "en", str(odd)], ("not valid UTF-8", "- < FILE")
    if name == "source-control-character":
        return ["ingest", "--lang", "en", "--source", "a\tb", str(good)], ("control character",)
    raise AssertionError(name)


BAD = [
    "missing",
    "directory",
    "binary",
    "format",
    "lang",
    "lang-newline",
    "column",
    "column-superscript",
    "model",
    "embeddings",
    "pair",
    "config",
    "init-model",
    "link-loop",
    "remove-loop",
    "file-name-not-utf8",
    "source-control-character",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_cleanly_and_changes_nothing(
    case: str, initialised: Path, tmp_path: Path
) -> None:
    before = stats()
    args, needles = _bad_case(case, tmp_path, initialised)
    assert_clean_error(invoke(*args), *needles)
    after = stats()
    assert after == before


@pytest.mark.parametrize(
    ("name", "lines", "good", "bad", "needle"),
    [
        (
            "a.tsv",
            ["id\ttext", "1\tein satz", "2\tzwei sätze"],
            ["--column", "text"],
            ["--column", "9"],
            "has 9 columns",
        ),
        (
            "a.tsv",
            ["1\tein satz", "2\tzwei sätze"],
            ["--column", "2", "--id-column", "1"],
            ["--column", "2", "--id-column", "3"],
            "has 3 columns",
        ),
        (
            "c.jsonl",
            ['{"m": {"b": "ein satz"}}', '{"m": {"b": "zwei sätze"}}'],
            ["--field", "m.b"],
            ["--field", "nope"],
            "field 'nope'",
        ),
        (
            "c.jsonl",
            ['{"t": "ein satz", "i": 1}', '{"t": "zwei sätze", "i": 2}'],
            ["--field", "t", "--id-field", "i"],
            ["--field", "t", "--id-field", "j"],
            "'j'",
        ),
    ],
)
def test_a_column_or_field_no_record_has_is_refused_and_the_source_kept(
    name: str,
    lines: list[str],
    good: list[str],
    bad: list[str],
    needle: str,
    initialised: Path,
    tmp_path: Path,
) -> None:
    """Read again with a column number no row reaches (or a field no record has), a file's
    source once lost every line it held, and the pairs with them, exit 0: every record was
    "malformed", so every line had gone. Now refused, and nothing changes."""
    path = write_lines(tmp_path / name, lines)
    ok("ingest", "--lang", "de", *good, str(path))
    before = (stats(), as_json(ok("sources", "--json")))
    assert_clean_error(invoke("ingest", "--lang", "de", *bad, str(path)), needle, "Nothing")
    assert (stats(), as_json(ok("sources", "--json"))) == before
    other = write_lines(tmp_path / f"new-{name}", lines)  # a first read: no empty source
    assert_clean_error(invoke("ingest", "--lang", "de", *bad, str(other)), needle)
    assert (stats(), as_json(ok("sources", "--json"))) == before


def test_a_file_read_again_another_way_is_refused_and_the_source_kept(
    initialised: Path, tmp_path: Path
) -> None:
    """A column that one ragged row reaches (or a field one record has) read the file's
    other lines as malformed, and they all left its source, exit 0: a file's source now
    keeps how it was read, and another reading is refused (a dry run too)."""
    rows = [f"id{i}\tein satz {i}" for i in range(6)]
    rows[3] += "\tone more"
    tsv = write_lines(tmp_path / "t.tsv", rows)
    ok("ingest", "--lang", "de", "--column", "2", "--id-column", "1", str(tsv))
    before = (stats(), as_json(ok("sources", "--json")))
    for extra in ([], ["--dry-run"]):
        line = assert_clean_error(
            invoke("ingest", "--lang", "de", "--column", "3", *extra, str(tsv)),
            "read with --format tsv --column 2 --id-column 1, not --format tsv --column 3",
        )
        assert "Nothing was changed" in line
    assert (stats(), as_json(ok("sources", "--json"))) == before
    # the same reading, spelled otherwise, is the same reading
    again = ok(
        "ingest",
        "--json",
        "--lang",
        "de",
        "--format",
        "tsv",
        "--column",
        "2",
        "--id-column",
        "1",
        str(tsv),
    )
    assert as_json(again)["ingested"][0]["duplicates"] == 6  # type: ignore[index]


def test_a_source_read_before_readings_were_kept_takes_the_next_one(
    initialised: Path, home: Path
) -> None:
    with sqlite3.connect(home / "bitextdb.sqlite") as conn:
        conn.execute("UPDATE sources SET reader = NULL")
    ok("ingest", "--lang", "en", str(initialised))
    with sqlite3.connect(home / "bitextdb.sqlite") as conn:
        (read,) = conn.execute("SELECT reader FROM sources").fetchone()
    assert json.loads(read) == {"format": "txt"}
    assert_clean_error(
        invoke("ingest", "--lang", "en", "--format", "tsv", str(initialised)),
        "read with --format txt, not --format tsv",
    )


def test_unreachable_database_fails_fast(home: Path) -> None:
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:1/nope"
    for args in (["stats"], ["init", "--model", "x", "--dim", "8"]):
        started = time.monotonic()
        result = invoke("--db", url, *args)
        assert time.monotonic() - started < 10
        line = assert_clean_error(result, "Cannot reach the database")
        assert "secret" not in result.output, line
    assert result.exit_code == bitextdb.StoreUnavailableError.exit_code


@pytest.mark.slow
def test_unreachable_qdrant_fails_within_bounded_time(home: Path, tiny_bert: Path) -> None:
    started = time.monotonic()
    result = invoke("--qdrant", "http://127.0.0.1:1", "init", "--model", str(tiny_bert))
    assert time.monotonic() - started < 10
    assert_clean_error(result, "Cannot reach Qdrant", "127.0.0.1:1")
    assert result.exit_code == bitextdb.StoreUnavailableError.exit_code
    # nothing written before the store answered: no schema in the home's database
    status = invoke("db", "status", "--json")
    assert json.loads(status.stdout)["current"] is None, status.output


@pytest.mark.parametrize(
    "args", [["stats"], ["mine"], ["config"], ["ingest", "--lang", "en", "-"]], ids=str
)
def test_command_before_init(args: list[str], home: Path) -> None:
    assert_clean_error(invoke(*args, input="a sentence\n"), "bitextdb init")


def test_model_that_cannot_be_loaded(home: Path, tmp_path: Path) -> None:
    result = invoke("init", "--model", "/nonexistent/model")
    assert_clean_error(result, "/nonexistent/model", "--model PATH")
    assert not home.exists()  # the model is asked before anything is written
    # a path with --dim was taken at its word, as a hub name is: a database of no model
    assert_clean_error(invoke("init", "--model", "/nonexistent/model", "--dim", "8"), "exist")
    a_file = write_lines(tmp_path / "en.txt", ["a line"])
    assert_clean_error(invoke("init", "--model", str(a_file)), "is a file, not a folder")
    assert not home.exists()
    # nothing half-made that later commands would take for a database
    not_made = invoke("stats")
    assert_clean_error(not_made, "bitextdb init")
    assert not_made.exit_code == 2  # run before the command it needs: a usage error


def test_a_failed_first_init_writes_no_schema(db_url: str, home: Path, tiny_bert: Path) -> None:
    """A model that cannot be loaded left an empty schema (a bitextdb.sqlite, or tables in
    PostgreSQL) that every later command took for a database without settings."""
    result = invoke("--db", db_url, "init", "--model", "/nonexistent/model")
    assert_clean_error(result, "/nonexistent/model")
    assert never_initialised(db_url)
    ok("--db", db_url, "init", "--model", str(tiny_bert))
    assert not never_initialised(db_url)


def test_a_model_folder_that_fails_to_load_says_why(initialised: Path) -> None:
    """Every failure said "no such local folder", the folder being there (--device cuda
    on a machine without one, a device torch does not know)."""
    result = invoke("ingest", "--lang", "de", "--device", "tpu", str(initialised))
    line = assert_clean_error(result, "--device 'tpu'", "not a device")
    assert "no such local folder" not in line


def test_gpus_the_machine_lacks_are_refused_before_a_sentence_is_stored(
    initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list of GPUs started its pool at the first encode, after the sentences were
    stored: worker tracebacks, exit 1, and sentences left without a vector."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    before = json.loads(ok("stats", "--json").stdout)["languages"]
    result = invoke("ingest", "--lang", "fr", "--device", "cuda:0,cuda:1", str(initialised))
    assert_clean_error(result, "--device cuda:0: this machine has no GPU", "--device cpu")
    assert result.exit_code == 2
    assert json.loads(ok("stats", "--json").stdout)["languages"] == before
    ok("config", "--device", "cuda:0,cuda:1")  # stored for another machine: said when used
    assert_clean_error(invoke("ingest", "--lang", "fr", str(initialised)), "has no GPU")
    stored = json.loads(ok("config", "--device", "cpu", "--batch-size", "8", "--json").stdout)
    assert (stored["device"], stored["batch_size"]) == ("cpu", 8)
    ok("ingest", "--lang", "fr", str(initialised))


def test_a_moved_model_folder_is_taken_back_only_if_it_gives_the_stored_vectors(
    home: Path, static_model: Path, tmp_path: Path
) -> None:
    """A database records its local model by absolute path; when the folder moved, no
    command could point it at the new place (init and --model refused another name)."""
    first, moved = tmp_path / "m1", tmp_path / "m2"
    shutil.copytree(static_model, first)
    ok("init", "--model", str(first))
    ok("ingest", "--lang", "en", str(write_lines(tmp_path / "en.txt", ["the dog sleeps"])))
    first.rename(moved)
    de = write_lines(tmp_path / "de.txt", ["der hund schläft"])
    assert_clean_error(invoke("ingest", "--lang", "de", str(de)), "config --model")
    other = build_static_crosslingual(tmp_path / "other", seed=1)  # same size, other vectors
    line = assert_clean_error(invoke("config", "--model", str(other)), "not this database's")
    assert "cosine" in line
    # a hub name (or a mistyped folder) is not loaded: the hub was asked, for a minute
    for name in ("sentence-transformers/LaBSE", "m2-typo"):
        assert_clean_error(invoke("config", "--model", name), "is no folder here")
    assert as_json(ok("config", "--json"))["model"] == str(first)  # unchanged
    report = as_json(ok("config", "--json", "--model", str(moved)))
    assert report["model"] == str(moved) and report["model_check"]["checked"] == 1
    assert report["model_check"]["lowest_cosine"] > 0.999
    ok("ingest", "--lang", "de", str(de))
    assert stats()["pairs"]["de-en"]["accepted"] == 1


def test_a_moved_model_that_cuts_sentences_shorter_is_refused(
    home: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    """The first 16 sentences by id were the whole sample: a folder whose model cuts
    sentences at 6 tokens passed on a database whose first sentences were short."""
    first, moved = tmp_path / "m1", tmp_path / "m2"
    shutil.copytree(tiny_bert, first)
    shutil.copytree(tiny_bert, moved)
    config = moved / "sentence_bert_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"max_seq_length": 6}))
    words = ["the", "a", "an", "and", "or", "but", "if", "of", "to", "in"]  # a token each
    short = [f"{a} {b} {c}" for a in words for b in words for c in words if len({a, b, c}) == 3]
    long = " ".join(words * 2)
    # one long sentence among 200 short ones, where no evenly spread sample falls
    ok("init", "--model", str(first))
    lines = [*short[:100], long, *short[100:200]]
    ok("ingest", "--lang", "en", str(write_lines(tmp_path / "en.txt", lines)))
    first.rename(tmp_path / "gone")
    assert_clean_error(invoke("config", "--model", str(moved)), "not this database's")
    empty = tmp_path / "empty-home"
    ok("--home", str(empty), "init", "--model", str(tiny_bert))
    said = ok("--home", str(empty), "config", "--model", str(moved)).stdout
    assert "taken on its dimension alone" in said


def test_explicit_home_flag_wins(home: Path, tiny_bert: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    ok("--home", str(other), "init", "--model", str(tiny_bert), "--dim", "32")
    assert (other / "bitextdb.sqlite").is_file()
    assert not (home / "bitextdb.sqlite").exists()
    assert_clean_error(invoke("stats"), "bitextdb init")  # BITEXTDB_HOME is still blank
    assert as_json(ok("--home", str(other), "stats", "--json"))["languages"] == {}  # type: ignore[index]


# -- docs ------------------------------------------------------------------------------------
def walk(group: click.Group, prefix: str = "bitextdb") -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        full = f"{prefix} {name}"
        yield full, command
        if isinstance(command, click.Group):
            yield from walk(command, full)


def test_every_command_has_help_and_is_in_the_readme() -> None:
    commands = dict(walk(cli))
    assert {"bitextdb init", "bitextdb ingest", "bitextdb mine", "bitextdb stats"} <= set(commands)
    for name, command in commands.items():
        assert (command.help or "").strip(), f"{name} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {param.opts[0]} has no help text"
    readme = README.read_text(encoding="utf-8") if README.is_file() else ""
    if len(readme.strip().splitlines()) <= 1:
        pytest.skip("README.md is still the one-line placeholder")
    missing = [name for name in commands if name not in readme]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"


def test_commands_that_neither_encode_nor_mine_do_not_import_torch(tmp_path: Path) -> None:
    """torch takes seconds to import: --help, init (of a database of given vectors), stats,
    check, export, sources, cursors, ``remove --dry-run`` and an ingest of given vectors
    with ``--no-mine`` start without it; ingest, mine and translate import it when run (and
    remove, which mines, when it removes)."""
    home, fresh = tmp_path / "home", tmp_path / "fresh"
    rng = np.random.default_rng(3)
    with bitextdb.init(home, model="laser-like", dim=8) as db:  # this process may use torch
        for lang in ("de", "en"):
            db.ingest_embeddings(
                lang, [f"{lang} {i}" for i in range(5)], rng.normal(size=(5, 8)), mine=False
            )
        db.mine()
    more = write_lines(tmp_path / "more.txt", ["en 5", "en 6"])
    npy = tmp_path / "more.npy"
    np.save(npy, rng.normal(size=(2, 8)).astype(np.float32))
    commands = [
        [str(fresh), "init", "--model", "laser-like", "--dim", "8"],
        [str(home), "--help"],
        [str(home), "stats"],
        [str(home), "check"],
        [str(home), "export", "--pair", "de-en", "--output", str(tmp_path / "pairs.tsv")],
        [str(home), "sources"],
        [str(home), "remove", "--lang", "de", "--source", "embeddings", "--dry-run"],
        [str(home), "cursors", "list"],
        [str(home), "cursors", "prune", "--dry-run"],
        # given vectors, not mined: no model, and no GPU to ask after (it was asked whether
        # the upserts should go to a child process, as for an encoding ingest)
        [str(home), "ingest", "--lang", "en", "--embeddings", str(npy), "--no-mine", str(more)],
    ]
    script = f"""
import sys
from click.testing import CliRunner
from bitextdb.cli import cli

for home, *args in {commands!r}:
    result = CliRunner().invoke(cli, ["-q", "--home", home, *args])
    assert result.exit_code == 0, (args, result.output)
    assert "torch" not in sys.modules, args
print("no torch")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "no torch"
    assert (tmp_path / "pairs.tsv").is_file()


def test_db_upgrade_waits_for_the_home_as_a_writer(home: Path) -> None:
    """A schema must not change under a running ingest or server."""
    bitextdb.init(home, model="synthetic", dim=4).close()
    with bitextdb.open(home):
        busy = invoke("db", "upgrade")
        assert busy.exit_code == 4, busy.output
    assert "at revision" in ok("db", "upgrade").output


def test_a_missing_sqlite_file_given_with_db_is_named(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "x.sqlite"
    result = invoke("--db", f"sqlite:///{missing}", "stats")
    assert_clean_error(result, f"No bitextdb database in {missing}", "bitextdb init")


def test_stats_says_what_waits_for_a_vector(home: Path) -> None:
    """After an ingest stopped before its vectors were stored, stats showed nothing
    waiting: `pending` counts only sentences with a vector."""
    with bitextdb.init(home, model="synthetic", dim=4, k=1) as db:
        db.ingest_embeddings("en", ["one", "two", "three"], np.eye(4, dtype=np.float32)[:3])
    with sqlite3.connect(home / "bitextdb.sqlite") as conn:
        conn.execute("UPDATE sentences SET indexed = 0 WHERE text <> 'one'")
    result = CliRunner().invoke(cli, ["--home", str(home), "stats"])
    assert result.exit_code == 0, result.output
    assert "(2 without a vector yet)" in result.output
    assert "(bitextdb mine does the work waiting)" in result.output


def test_check_after_an_ingest_without_mining_points_to_mine(home: Path) -> None:
    with bitextdb.init(home, model="synthetic", dim=4, k=1) as db:
        db.ingest_embeddings("en", ["one", "two"], np.eye(4, dtype=np.float32)[:2])
        db.ingest_embeddings("de", ["eins", "zwei"], np.eye(4, dtype=np.float32)[:2], mine=False)
    result = CliRunner().invoke(cli, ["--home", str(home), "check"])
    assert result.exit_code == 1, result.output
    assert "mining has work waiting (run `bitextdb mine`)" in result.output
    assert CliRunner().invoke(cli, ["--home", str(home), "-q", "mine"]).exit_code == 0
    again = CliRunner().invoke(cli, ["--home", str(home), "check", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["only_work_waiting"] is False


def test_stats_says_how_each_side_is_searched(home: Path) -> None:
    """The miner decides per side by the size of the collection it searches; stats named
    one mode for the pair from the larger side."""
    with bitextdb.init(home, model="synthetic", dim=4, k=1, exact_limit=3) as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(5)], np.ones((5, 4), np.float32))
        db.ingest_embeddings("de", [f"de {i}" for i in range(2)], np.ones((2, 4), np.float32))
        pair = db.stats()["pairs"]["de-en"]
    assert pair["searched"] == {"de": "exact", "en": "hnsw"} and pair["search"] == "mixed"
    result = CliRunner().invoke(cli, ["--home", str(home), "stats"])
    assert "hnsw search of en" in result.output and "exact search of de" in result.output


def test_db_status_and_upgrade_leave_a_home_that_is_not_there_alone(tmp_path: Path) -> None:
    """`db status` (read-only, says its help) made the folder and an empty SQLite file;
    `db upgrade` then made a schema without settings, which every command refused."""
    home = tmp_path / "none"
    status = CliRunner().invoke(cli, ["--home", str(home), "db", "status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["current"] is None
    upgrade = CliRunner().invoke(cli, ["--home", str(home), "db", "upgrade"])
    assert upgrade.exit_code == 2 and "run `bitextdb init`" in upgrade.output
    assert not home.exists()


def test_messages_say_what_was_given(home: Path) -> None:
    with bitextdb.init(home, model="synthetic", dim=4, k=1) as db:
        db.ingest_embeddings("en", ["one", "two"], np.eye(4, dtype=np.float32)[:2])
        with pytest.raises(bitextdb.ConfigError, match="There is no setting 'foo'"):
            db.configure(foo=1)
        with pytest.raises(bitextdb.ConfigError, match="fixed when the database is created"):
            db.configure(k=3)
        with pytest.raises(bitextdb.InputError, match="0 or more"):
            db.check(deep=True, sample=-1)
        with pytest.raises(bitextdb.InputError, match="not NoneType"):
            db.ingest_texts("en", None)  # type: ignore[arg-type]
    both = ["--home", str(home), "remove", "--lang", "en", "--source", "x", "--missing"]
    result = CliRunner().invoke(cli, both)
    assert result.exit_code == 2 and "not both" in result.output


def test_a_wait_that_ran_out_is_not_told_to_pass_wait(tmp_path: Path) -> None:
    from bitextdb.errors import BusyError
    from bitextdb.lock import writer_lock

    path = tmp_path / "bitextdb.lock"
    path.write_text("")
    other = os.open(path, os.O_RDWR)  # as another process holds it: a lock of its own
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        with (
            pytest.raises(BusyError, match=r"within the 0.2 s waited"),
            writer_lock(path, wait=0.2),
        ):
            pass
        with pytest.raises(BusyError, match=r"or pass --wait SECONDS"), writer_lock(path):
            pass
    finally:
        os.close(other)


def test_a_home_open_in_this_process_is_said_so_at_once(home: Path) -> None:
    """The second open waited out its `wait` on this process's own lock, then blamed
    'another bitextdb process' with this process's pid."""
    bitextdb.init(home, model="synthetic", dim=4).close()
    with bitextdb.open(home) as first:
        started = time.monotonic()
        with pytest.raises(bitextdb.BusyError, match=r"This process has .* open already"):
            bitextdb.open(home, wait=5)
        assert time.monotonic() - started < 4
        assert first.stats()["languages"] == {}  # the first is untouched
    bitextdb.open(home).close()  # and, once closed, the home opens again
    for wait in (-1, "x", True, float("nan")):
        with pytest.raises(bitextdb.ConfigError, match="number of seconds"):
            bitextdb.open(home, wait=wait)


def test_init_takes_pairs_all_as_config_does(home: Path) -> None:
    base = ["--home", str(home), "-q", "init", "--model", "synthetic", "--dim", "4"]
    assert CliRunner().invoke(cli, [*base, "--pairs", "en-de"]).exit_code == 0
    result = CliRunner().invoke(cli, [*base, "--pairs", "all"])
    assert result.exit_code == 0, result.output
    with bitextdb.open(home) as db:
        assert db.settings.pairs is None


def test_check_sample_without_deep_is_refused(home: Path) -> None:
    bitextdb.init(home, model="synthetic", dim=4).close()
    result = CliRunner().invoke(cli, ["--home", str(home), "check", "--sample", "5"])
    assert result.exit_code == 2 and "add --deep" in result.output
    assert CliRunner().invoke(cli, ["--home", str(home), "check"]).exit_code == 0


def test_a_file_system_that_refuses_is_one_line_not_a_bug(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk or a read-only home came out as `unexpected OSError ... (set
    BITEXTDB_DEBUG=1 for the traceback)`, as if it were a bug."""
    import bitextdb.api

    bitextdb.init(home, model="synthetic", dim=4).close()

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system", str(home / "bitextdb.lock"))

    monkeypatch.setattr(bitextdb.api, "writer_lock", read_only)
    result = CliRunner().invoke(cli, ["--home", str(home), "stats"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: Read-only file system: {home / 'bitextdb.lock'}."


def test_a_database_lost_outside_a_session_is_exit_3(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy

    import bitextdb.api

    bitextdb.init(home, model="synthetic", dim=4).close()

    def lost(self: object) -> dict:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection lost\nmore"))

    monkeypatch.setattr(bitextdb.api.BitextDB, "stats", lost)
    result = CliRunner().invoke(cli, ["--home", str(home), "stats"])
    assert result.exit_code == 3
    assert result.output.strip() == "Error: The database failed: connection lost"
