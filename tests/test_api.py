"""The library face as a Python user meets it: its public names, a closed handle, strings
where lists are expected, and arguments checked before anything is stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import bitextdb
from bitextdb.config import Settings
from bitextdb.errors import InputError
from tests.test_miner import make_vectors

PUBLIC = {
    "BitextDB",
    "BitextDBError",
    "BusyError",
    "ClosedError",
    "ConfigError",
    "HistoryGoneError",
    "InputError",
    "ModelLoadError",
    "ModelMismatchError",
    "NotInitializedError",
    "Settings",
    "StoreUnavailableError",
    "UnknownSourceError",
    "__version__",
    "init",
    "open",
    "tune_allocator",
}


def test_the_public_names_are_the_intended_ones() -> None:
    assert set(bitextdb.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(bitextdb, name) is not None
    assert set(dir(bitextdb)) >= PUBLIC, "tab completion misses the lazily loaded names"


def _home(home: Path) -> bitextdb.BitextDB:
    db = bitextdb.init(home, model="synthetic", dim=8, k=2)
    db.ingest_embeddings("en", [f"en {i}" for i in range(6)], make_vectors(6, 8, 1, 0))
    db.ingest_embeddings("de", [f"de {i}" for i in range(6)], make_vectors(6, 8, 1, 0))
    return db


def test_a_closed_handle_refuses_every_call_that_needs_a_store(home: Path) -> None:
    """It went on reading and writing after ``close()``, without the home's lock."""
    db = _home(home)
    db.close()
    db.close()  # twice: harmless
    for call in (
        db.stats,
        lambda: db.sources(),
        lambda: db.ingest_embeddings("en", ["late"], make_vectors(1, 8, 3, 0)),
        lambda: db.translate("en 1", "en", "de"),
        lambda: db.export("de-en", output=str(home / "x.tsv")),
        db.check,
    ):
        with pytest.raises(bitextdb.ClosedError, match="closed; open it again"):
            call()
    with bitextdb.open(home) as again:
        assert again.stats()["languages"]["en"]["sentences"] == 6
    with pytest.raises(bitextdb.ClosedError):
        again.stats()


def test_a_string_where_a_list_is_expected_is_one_item(home: Path, tiny_bert: Path) -> None:
    """``ingest_texts("en", "Hello world.")`` read each character as a sentence (all too
    short), ``mine("de-en")`` and ``configure(pairs="de-en")`` read 'd' as a pair."""
    with bitextdb.init(home, model="synthetic", dim=8, k=2) as db:
        db.ingest_embeddings("de", [f"de {i}" for i in range(6)], make_vectors(6, 8, 1, 0))
        db.ingest_embeddings("en", [f"en {i}" for i in range(6)], make_vectors(6, 8, 1, 0))
        assert db.configure(pairs="de-en, en-fr").pairs == ["de-en", "en-fr"]
        (report,) = db.mine("de-en")
        assert report.pair == "de-en"
        assert len(db.translate_many("en 1", "en", "de")) == 1
    with bitextdb.init(home / "texts", model=str(tiny_bert)) as db:
        (read,) = db.ingest_texts("en", "Hello world.", mine=False)["ingested"]
        assert (read["read"], read["new"]) == (1, 1)


def test_mining_a_pair_the_database_does_not_mine_is_refused(home: Path) -> None:
    """``mine(["en-xx"])`` wrote lists towards a language nobody ingested, and ``mine
    --pair`` mined a pair that ``config --pairs`` left out (stats then hid it)."""
    with _home(home) as db:
        with pytest.raises(bitextdb.InputError, match="no xx sentences"):
            db.mine(["en-xx"])
        db.ingest_embeddings("fr", ["fr 0", "fr 1"], make_vectors(2, 8, 4, 0), mine=False)
        db.configure(pairs=["de-en"])
        with pytest.raises(bitextdb.InputError, match="en-fr is not among the pairs"):
            db.mine("en-fr")
        with db.db.session() as s:
            others = s.execute(sa.text("SELECT DISTINCT other_lang FROM knn")).scalars()
            assert set(others) == {"de", "en"}
        db.configure(pairs=["de-en", "en-fr"])
        assert [r.pair for r in db.mine("fr-en")] == ["en-fr"]


def test_export_takes_since_as_iso_text(home: Path) -> None:
    with _home(home) as db:
        out = home / "p.jsonl"
        done = db.export("de-en", output=str(out), fmt="jsonl", since="2020-01-01T00:00:00Z")
        assert done["rows"] == len(out.read_text().splitlines()) > 0
        with pytest.raises(bitextdb.InputError, match="not an ISO timestamp"):
            db.export("de-en", output=str(out), since="yesterday")


def test_init_refuses_k_zero_and_keeps_the_threshold_a_float(home: Path) -> None:
    """``init(k=0)`` stored k=4 (``k or default``), and a second ``init(k=0)`` was then
    refused as a change of k."""
    with pytest.raises(bitextdb.ConfigError, match="k must be between 1 and 64, not 0"):
        bitextdb.init(home, model="synthetic", dim=8, k=0)
    with bitextdb.init(home, model="synthetic", dim=8, threshold=1) as db:
        assert isinstance(db.settings.threshold, float)
        assert np.isclose(db.stats()["settings"]["threshold"], 1.0)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda db: db.translate("en \ud800 1", "en", "de"), "lone surrogate"),
        (lambda db: db.translate_many([None], "en", "de"), "not NoneType"),
        (lambda db: db.translate("en 1", "en", "de", top="3"), "whole number"),
        # a text of megabytes held the tokenizer (and every other request of serve) up
        (lambda db: db.translate("word " * 250_000, "en", "de"), "1,249,999 characters, more"),
    ],
)
def test_translate_refuses_what_is_not_a_sentence_with_an_input_error(
    call: Any, needle: str, home: Path
) -> None:
    """A lone surrogate raised UnicodeEncodeError, None TypeError, ``top="3"`` TypeError."""
    with _home(home) as db, pytest.raises(bitextdb.InputError, match=needle):
        call(db)


def test_init_checks_dim_against_a_local_model(home: Path, tiny_bert: Path) -> None:
    """``init --dim 64`` with a 32-dimensional model folder made a home that could never
    encode (and whose dimension can never change)."""
    with pytest.raises(bitextdb.ModelMismatchError, match="32-dimensional vectors, not 64"):
        bitextdb.init(home, model=str(tiny_bert), dim=64)
    with pytest.raises(bitextdb.NotInitializedError):
        bitextdb.open(home)
    with bitextdb.init(home, model=str(tiny_bert), dim=32) as db:
        assert db.settings.dim == 32


def test_a_closed_handle_changes_and_loads_nothing(home: Path, tiny_bert: Path) -> None:
    db = bitextdb.init(home, model=str(tiny_bert))
    db.close()
    with pytest.raises(bitextdb.ClosedError):
        db.configure(threshold=1.3)
    assert db.settings.threshold == 1.0  # not changed on the way to the refusal
    for call in (lambda: db.encoder, lambda: db.relocate_model(str(tiny_bert)), db.miner):
        with pytest.raises(bitextdb.ClosedError):
            call()


def test_library_arguments_of_the_wrong_kind_are_input_errors(home: Path) -> None:
    with _home(home) as db:
        for pairs in ([None], 5, b"de-en"):
            with pytest.raises(bitextdb.InputError, match="as text such as 'de-en'"):
                db.mine(pairs)  # type: ignore[arg-type]
        assert db.configure(pairs="all").pairs is None
        with pytest.raises(bitextdb.ConfigError, match=r"not '1\.2'"):
            db.configure(threshold="1.2")
        wrong = {
            "threshold": (True, "a number"),
            "k": ("5", "a whole number"),
            "exact_limit": (2.5, "a whole number"),
            "bulk_ratio": ("x", "a number"),
            "encoder_process": (2, "true or false"),  # 0 and 1 are taken, as stored once
            "device": (0, "text"),
            "pairs": (5, "language pairs such as 'en-de'"),
        }
        for key, (value, kind) in wrong.items():
            if key == "k":  # fixed at init: refused for that first
                with pytest.raises(bitextdb.ConfigError, match="k must be a whole number"):
                    Settings(k=value).validate()
                continue
            with pytest.raises(bitextdb.ConfigError, match=f"{key} must be .*{kind}"):
                db.configure(**{key: value})
        assert db.settings.threshold == 1.0 and db.settings.pairs is None  # nothing stored
        # a path with a NUL is no path; bytes were read as a list of byte values
        with pytest.raises(
            bitextdb.InputError, match=r"Cannot resolve 'a\\x00b\.txt': embedded null byte"
        ):
            db.ingest("a\x00b.txt", "en")
        for paths in (b"/tmp/x.txt", [b"/tmp/x.txt"]):
            with pytest.raises(bitextdb.InputError, match=r"as str or pathlib\.Path, not bytes"):
                db.ingest(paths, "en")  # type: ignore[arg-type]
        # numpy's numbers are numbers, stored as Python's
        assert db.configure(exact_limit=np.int64(7)).exact_limit == 7
        assert type(db.settings.exact_limit) is int


def test_values_of_the_wrong_kind_are_one_clear_sentence_and_change_nothing(
    home: Path, tmp_path: Path
) -> None:
    """Each of these escaped as a TypeError, AttributeError or ValueError (one as raw SQL:
    ``remove`` given a ``pathlib.Path``, which ``ingest`` takes)."""
    eye = np.eye(4, dtype=np.float32)
    en = tmp_path / "en.txt"
    en.write_text("one\ntwo\n")
    gold, out = tmp_path / "gold.tsv", tmp_path / "out.tsv"
    gold.write_text("one\teins\ntwo\tzwei\n")
    with bitextdb.init(home, model="synthetic", dim=4, k=1) as db:
        db.ingest(en, "en", embeddings=_npy(tmp_path / "en.npy", eye[:2]))
        db.ingest_embeddings("de", ["eins", "zwei"], eye[:2])
        before = (db.stats()["languages"], db.sources("en"), db.sources("de"))
        wrong: list[tuple[Callable[[], object], type[Exception], str]] = [
            (lambda: db.remove("en", None), InputError, "not NoneType"),
            (lambda: db.remove("en", b"en.txt"), InputError, "not bytes"),
            (lambda: db.remove("en", [en, 5]), InputError, "not int"),
            # a file name that is not UTF-8, as Python hands it over: raw UnicodeEncodeError
            (lambda: db.remove("en", ["s\udc80ur"]), InputError, "not valid Unicode"),
            (lambda: db.ingest_texts("en", ["three"], source=None), InputError, "not NoneType"),
            (lambda: db.ingest_texts("en", b"three"), InputError, "decode them first"),
            (lambda: db.ingest(None, "en"), InputError, "at least one file"),
            (lambda: db.translate_many(None, "en", "de"), InputError, "not NoneType"),
            (lambda: db.ingest_embeddings("fr", None, eye[:1]), InputError, "not NoneType"),
            (lambda: db.ingest_embeddings("fr", ["x"], [["a"] * 4]), InputError, "real numbers"),
            (lambda: db.ingest_embeddings("fr", ["x"], eye[:1] * 1j), InputError, "real numbers"),
            (lambda: db.export(None), InputError, "as text"),
            (lambda: db.export("en-de", output=None), InputError, "--output names a file"),
            (lambda: db.export("en-de", max_length_ratio="2"), InputError, "must be a number"),
            (lambda: db.export("en-de", foo=1), InputError, "takes no option foo"),
            (lambda: db.export("en-de", output=str(out), cursor=5), InputError, "not int"),
            (lambda: db.evaluate("en-de", gold, bogus=1), InputError, "no option bogus"),
            (lambda: db.evaluate("en-de", gold, steps="3"), InputError, "not '3'"),
            (lambda: db.evaluate("en-de", gold, steps=2.5), InputError, "not 2.5"),
            (lambda: db.evaluate("en-de", gold, steps=None), InputError, "not None"),
            (lambda: db.configure(device="bogus"), bitextdb.ConfigError, "'bogus' is not a"),
            (lambda: bitextdb.open(b"/tmp/h"), bitextdb.ConfigError, "not bytes"),
            (lambda: bitextdb.open(5), bitextdb.ConfigError, "not int"),
            (lambda: bitextdb.init(en, model="synthetic", dim=4), bitextdb.ConfigError, "a file"),
        ]
        for call, kind, message in wrong:
            with pytest.raises(kind, match=message):
                call()
        assert (db.stats()["languages"], db.sources("en"), db.sources("de")) == before
        assert db.settings.device is None

        # what is right: a path names the source it made; one string is one item; numpy's
        # whole numbers are whole numbers; a call with no texts makes no language
        assert db.translate("one", "en", "de", top=np.int64(1)).hits
        db.ingest_embeddings("fr", "un", eye[:1])
        assert [s["name"] for s in db.sources("fr")] == ["embeddings"]
        db.ingest_texts("xx", [])
        db.ingest_embeddings("yy", [], np.zeros((0, 4), np.float32))
        assert set(db.stats()["languages"]) == {"de", "en", "fr"}
        assert db.evaluate("en-de", gold, steps=np.int64(2))["best"]["f1"] == 1.0
        assert not out.exists()
        assert db.remove("en", en)["sentences_removed"] == 2
        assert db.configure(device="cuda:0,cuda:1").device == "cuda:0,cuda:1"


def _npy(path: Path, rows: np.ndarray) -> str:
    np.save(path, rows)
    return str(path)


def test_whole_floats_are_whole_numbers_and_init_checks_its_dimension(
    db_url: str, home: Path
) -> None:
    """A home made by a version that stored ``batch_size=32.0`` (kept so as JSON on
    PostgreSQL) still opens; a dimension of the wrong kind is refused as other settings are."""
    for dim, message in ((True, "not True"), (8.7, "8.7"), ("8", "'8'"), (-5, "positive")):
        with pytest.raises(bitextdb.ConfigError, match=message):
            bitextdb.init(home, db=db_url, model="given", dim=dim)  # type: ignore[arg-type]
    bitextdb.init(home, db=db_url, model="given", dim=8).close()
    with bitextdb.open(home, db=db_url) as db, db.db.session() as s:
        update = sa.text("UPDATE settings SET value = :v WHERE key = :k")
        s.execute(update, {"k": "batch_size", "v": "32.0"})
        s.execute(update, {"k": "encoder_process", "v": "0"})
    with bitextdb.open(home, db=db_url) as db:
        assert db.settings.batch_size == 32 and type(db.settings.batch_size) is int
        assert db.settings.encoder_process is False  # 0, as an older library stored it
        assert db.configure(batch_size=16.0).batch_size == 16


@pytest.mark.parametrize("name", ["h%41x", "a?b=1", "c#d"])
def test_a_home_whose_name_reads_as_url_syntax_keeps_its_database_inside(
    tmp_path: Path, name: str
) -> None:
    """The SQLite URL was built from the path unescaped: `h%41x` put the database in
    `hAx`, `a?b=1` in a file `a` beside the home, and init then said there was none."""
    home = tmp_path / name
    db = bitextdb.init(home, model="synthetic", dim=4, k=1)
    db.ingest_embeddings("en", ["one", "two"], np.eye(4, dtype=np.float32)[:2])
    db.close()
    assert (home / "bitextdb.sqlite").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with bitextdb.open(home) as again:
        assert again.stats()["languages"]["en"]["sentences"] == 2


def test_source_names_may_hold_any_space_and_joiners_but_no_line_breaks(home: Path) -> None:
    """`isprintable` refused a Persian file name (its zero-width non-joiner), an
    ideographic or no-break space, an emoji family (its zero-width joiners)."""
    db = bitextdb.init(home, model="synthetic", dim=4, k=1)
    try:
        names = ["می\u200cخواهم.txt", "日本語\u3000コーパス", "nbsp\u00a0x", "👨\u200d👩\u200d👧"]
        for n, name in enumerate(names):
            db.ingest_embeddings("en", [f"text {n}"], np.eye(4, dtype=np.float32)[n : n + 1],
                                 source=name)  # fmt: skip
        assert {s["name"] for s in db.sources("en")} == set(names)
        for bad in ("a\tb", "a\u2028b", "a\nb", "a\udcffb"):
            with pytest.raises(InputError, match="control character"):
                db.ingest_embeddings("en", ["other"], np.ones((1, 4), np.float32), source=bad)
    finally:
        db.close()


def test_an_ingest_says_it_encoded_what_an_earlier_run_left(home: Path, tiny_bert: Path) -> None:
    """The vectors an ingest stopped before storing were made by the next ingest, which
    said `encoded 0`."""
    from sqlalchemy import text

    db = bitextdb.init(home, model=str(tiny_bert))
    try:
        db.ingest_texts("en", [f"sentence number {i}" for i in range(10)])
        with db.db.session() as s:
            s.execute(text("UPDATE sentences SET indexed = false WHERE id % 2 = 0"))
        done = db.ingest_texts("en", ["one more sentence"], source="more")
        (report,) = done["ingested"]
        assert (report["resumed"], report["encoded"]) == (5, 1)
        assert db.check().ok
    finally:
        db.close()


def test_texts_that_fail_to_store_leave_no_source_claiming_them(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST /ingest that met a full disk left a source of no sentence claiming 12,000
    records."""
    from bitextdb.errors import StoreUnavailableError
    from bitextdb.ingest import Ingestor

    db = bitextdb.init(home, model="synthetic", dim=4, k=1)
    try:
        db.ingest_embeddings("en", ["one", "two"], np.eye(4, dtype=np.float32)[:2], source="s")

        def full(*args: object, **kwargs: object) -> None:
            raise StoreUnavailableError("The database failed: database or disk is full")

        monkeypatch.setattr(Ingestor, "_store_batch", full)
        three = np.eye(4, dtype=np.float32)[:3]
        for source in ("new", "s"):
            with pytest.raises(StoreUnavailableError):
                db.ingest_embeddings("en", ["a b", "c d", "e f"], three, source=source)
        monkeypatch.undo()
        assert {(s["name"], s["records"]) for s in db.sources("en")} == {("s", 2)}
        db.ingest_embeddings("en", ["three"], np.eye(4, dtype=np.float32)[2:3], source="s")
        assert {(s["name"], s["records"]) for s in db.sources("en")} == {("s", 3)}
    finally:
        db.close()
