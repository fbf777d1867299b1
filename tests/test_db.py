"""SQL database: migrations, settings, store locations, and the small parsers of config.py."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import bitextdb
from bitextdb.config import (
    LOCATIONS_FILE,
    Locations,
    Settings,
    check_lang,
    mask_url,
    pair_name,
    pairs_to_mine,
    parse_pair,
    resolve_home,
    resolve_locations,
    write_locations_file,
)
from bitextdb.db import Database, corpus, never_initialised
from bitextdb.db.engine import migrations_dir
from bitextdb.errors import ConfigError, NotInitializedError, StoreUnavailableError
from tests.schema_helpers import database_at, model_differences

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"settings", "sources", "sentences", "occurrences", "knn", "neighbours", "pairs"}


def table_names(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


# -- migrations ------------------------------------------------------------------------------
def test_asking_a_database_not_made_for_its_revision_writes_nothing(tmp_path: Path) -> None:
    """``db status``'s library form made the folder and an empty SQLite file."""
    where = tmp_path / "not-yet" / "bitextdb.sqlite"
    db = Database(f"sqlite:///{where}")
    try:
        assert db.current_revision() is None and never_initialised(f"sqlite:///{where}")
        assert not where.parent.exists()
        db.upgrade()  # the first connection makes both
        assert db.current_revision() == db.head_revision()
    finally:
        db.dispose()


def test_upgrade_blank_database_to_head(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert db.current_revision() is None
        assert not (TABLES & table_names(db))
        head = db.head_revision()
        assert head
        db.upgrade()
        assert db.current_revision() == head
        assert table_names(db) >= TABLES | {"alembic_version"}
        db.upgrade()  # twice: harmless
        assert db.current_revision() == head
        db.require_schema()
    finally:
        db.dispose()
    # a new connection sees the same
    again = Database(db_url)
    try:
        assert again.current_revision() == head
        again.require_schema()
    finally:
        again.dispose()


def test_require_schema_on_a_blank_database(db_url: str) -> None:
    db = Database(db_url)
    try:
        with pytest.raises(NotInitializedError, match="bitextdb init"):
            db.require_schema()
    finally:
        db.dispose()


def test_require_schema_on_an_old_revision(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        db.upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0004'"))
        with pytest.raises(NotInitializedError, match="db upgrade"):
            db.require_schema()
    finally:
        db.dispose()


def test_a_schema_newer_than_this_bitextdb_is_said_so(tmp_path: Path) -> None:
    """Once 'run `bitextdb db upgrade`', which then failed with alembic's CommandError."""
    db = Database(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        db.upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
        for step in (db.require_schema, db.upgrade):
            with pytest.raises(ConfigError, match="0099, which this bitextdb does not know"):
                step()
        assert db.current_revision() == "0099"
    finally:
        db.dispose()


def test_0006_adds_the_cursor_filters_that_homes_stamped_0003_early_lack(db_url: str) -> None:
    """Revision 0003 gained ``export_cursors.filters`` after homes were stamped with it."""
    database = database_at(db_url, "0005", "ALTER TABLE export_cursors DROP COLUMN filters")
    try:
        assert model_differences(database)
        database.upgrade()
        assert not model_differences(database)
        database.upgrade()  # twice: harmless
    finally:
        database.dispose()


def test_0006_raises_the_sqlite_id_floor_to_the_ids_withdrawal_records_name(
    tmp_path: Path,
) -> None:
    """Sentences removed before the id floor existed left none: their ids were given
    again. The withdrawal records still name them."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    database = database_at(
        url,
        "0005",
        "INSERT INTO withdrawn_pairs (src_id, tgt_id, src_lang, tgt_lang, src_text, tgt_text,"
        " src_hash, tgt_hash, margin, cosine, reason, withdrawn_at) VALUES (40, 7, 'de', 'en',"
        " 'a', 'b', 'h1', 'h2', 1.5, 0.9, 'removed', '2026-11-28 10:00:00')",
    )
    try:
        database.upgrade()
        with database.session() as s:
            assert corpus._first_free_id(s) == 41
    finally:
        database.dispose()


def test_migrations_dir_is_found() -> None:
    path = migrations_dir()
    assert (path / "env.py").is_file()
    assert (path / "versions" / "0001_initial_schema.py").is_file()


def test_settings_round_trip(db_url: str) -> None:
    db = Database(db_url)
    try:
        db.upgrade()
        assert db.load_settings() is None
        settings = Settings(
            model="some/model", dim=384, k=6, threshold=1.07, pairs=["de-en", "en-fr"]
        ).validate()
        settings.extra = {"note": "ünïcode", "n": [1, 2]}
        db.save_settings(settings)
        loaded = db.load_settings()
        assert loaded is not None
        assert loaded.to_dict() == settings.to_dict()
        settings.threshold = 1.2
        settings.pairs = None
        db.save_settings(settings)  # saving again replaces
        loaded = db.load_settings()
        assert loaded is not None
        assert (loaded.threshold, loaded.pairs) == (1.2, None)
    finally:
        db.dispose()


def test_sessions_commit_or_roll_back(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.sqlite'}")
    try:
        db.upgrade()
        with db.session() as s:
            s.execute(sa.text("INSERT INTO settings (key, value) VALUES ('a', '1')"))
        with pytest.raises(RuntimeError), db.session() as s:
            s.execute(sa.text("INSERT INTO settings (key, value) VALUES ('b', '2')"))
            raise RuntimeError("boom")
        with db.session() as s:
            keys = s.execute(sa.text("SELECT key FROM settings")).scalars().all()
        assert keys == ["a"]
    finally:
        db.dispose()


def test_bad_urls() -> None:
    with pytest.raises(ConfigError):
        Database("not a url at all")
    with pytest.raises(ConfigError, match="driver"):
        Database("nosuchdialect://x/y")
    db = Database("postgresql+psycopg://postgres:pw@127.0.0.1:1/nope")
    try:
        with pytest.raises(StoreUnavailableError) as info:
            db.upgrade()
        assert "pw@" not in str(info.value)
    finally:
        db.dispose()


# -- store locations -------------------------------------------------------------------------
def test_resolve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITEXTDB_HOME", str(tmp_path / "env-home"))
    assert resolve_home(tmp_path / "flag-home") == (tmp_path / "flag-home").resolve()
    assert resolve_home(None) == (tmp_path / "env-home").resolve()
    monkeypatch.delenv("BITEXTDB_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_home(None) == tmp_path / "xdg" / "bitextdb"


def test_resolve_locations_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    home.mkdir()
    monkeypatch.delenv("BITEXTDB_HOME")
    # nothing given: the defaults
    loc = resolve_locations(home)
    assert loc.db == f"sqlite:///{home.resolve() / 'bitextdb.sqlite'}"
    assert loc.qdrant is None
    assert loc.qdrant_prefix == "bitextdb_"
    # what the home remembers
    (home / LOCATIONS_FILE).write_text(
        json.dumps({"db": "sqlite:///remembered", "qdrant": "http://q1", "qdrant_prefix": "r_"})
    )
    loc = resolve_locations(home)
    assert (loc.db, loc.qdrant, loc.qdrant_prefix) == ("sqlite:///remembered", "http://q1", "r_")
    # environment beats the home
    monkeypatch.setenv("BITEXTDB_DB", "sqlite:///env")
    monkeypatch.setenv("BITEXTDB_QDRANT", "http://q2")
    monkeypatch.setenv("BITEXTDB_QDRANT_PREFIX", "e_")
    loc = resolve_locations(home)
    assert (loc.db, loc.qdrant, loc.qdrant_prefix) == ("sqlite:///env", "http://q2", "e_")
    # flags beat everything
    loc = resolve_locations(home, "sqlite:///flag", "http://q3", "f_")
    assert (loc.db, loc.qdrant, loc.qdrant_prefix) == ("sqlite:///flag", "http://q3", "f_")
    # an empty variable counts as unset
    monkeypatch.setenv("BITEXTDB_DB", "")
    assert resolve_locations(home).db == "sqlite:///remembered"


def test_locations_file_round_trip_and_errors(tmp_path: Path) -> None:
    loc = Locations(
        home=tmp_path, db="postgresql://u:pw@h/db", qdrant="http://q", qdrant_prefix="p_"
    )
    write_locations_file(loc)
    path = tmp_path / LOCATIONS_FILE
    assert path.stat().st_mode & 0o077 == 0  # may hold a password
    again = resolve_locations(tmp_path)
    assert (again.db, again.qdrant, again.qdrant_prefix) == (loc.db, loc.qdrant, loc.qdrant_prefix)
    assert again.describe()["db"] == "postgresql://u:***@h/db"
    assert again.describe()["vector_backend"] == "qdrant-server"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=LOCATIONS_FILE):
        resolve_locations(tmp_path)
    path.unlink()
    with pytest.raises(ConfigError, match="prefix"):
        resolve_locations(tmp_path, qdrant_prefix="bad prefix!")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg://user:secret@host:5432/db",
            "postgresql+psycopg://user:***@host:5432/db",
        ),
        ("http://key:s3cr3t@qdrant:6333", "http://key:***@qdrant:6333"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
        ("http://qdrant:6333", "http://qdrant:6333"),
        (None, None),
        ("", ""),
    ],
)
def test_mask_url(url: str | None, masked: str | None) -> None:
    assert mask_url(url) == masked


# -- language codes and pairs ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("en-de", ("de", "en")),
        ("de-en", ("de", "en")),
        ("de:en", ("de", "en")),
        ("zh-Hant:en", ("en", "zh-Hant")),
        ("en:zh-Hant", ("en", "zh-Hant")),
        ("eng-deu", ("deu", "eng")),
        ("EN-DE", ("de", "en")),
        ("zh-Hant-en", ("en", "zh-Hant")),
        ("en-zh-hant", ("en", "zh-Hant")),
        ("en-pt-BR", ("en", "pt-BR")),
        ("pt_br-zh-Hant", ("pt-BR", "zh-Hant")),
        ("sr-Latn-RS-de", ("de", "sr-Latn-RS")),
    ],
)
def test_parse_pair(text: str, pair: tuple[str, str]) -> None:
    assert parse_pair(text) == pair
    assert pair_name(*pair) == "-".join(pair)


@pytest.mark.parametrize(
    "text", ["en-en", "en", "", "en-de-fr", "en-EN", "pt-br:pt_BR", "en:de:fr", "en-pt-br", "x-de"]
)
def test_parse_pair_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_pair(text)


def test_an_ambiguous_pair_names_its_readings() -> None:
    with pytest.raises(ConfigError, match=r"\(en:pt-br or en-pt:br\)"):
        parse_pair("en-pt-br")


@pytest.mark.parametrize(
    ("a", "b", "name"),
    [
        ("en", "zh-yue", "en:zh-yue"),
        ("zh", "zh-yue", "zh:zh-yue"),
        ("de-1901", "en", "de-1901-en"),
        ("pt-BR", "en", "en-pt-BR"),
        ("es-419", "ca", "ca-es-419"),
        ("en-PT", "br", "br-en-PT"),
    ],
)
def test_pair_names_read_back(a: str, b: str, name: str) -> None:
    """Every name ``pair_name`` gives (settings, cursors and ``stats`` keep them) parses back
    to its two codes: with ':' where '-' would be ambiguous."""
    assert pair_name(a, b) == name
    assert parse_pair(name) == tuple(sorted((a, b)))


def test_pairs_to_mine_with_codes_of_several_subtags() -> None:
    chosen = Settings(pairs=["pt-BR:zh-Hant", "en:pt-BR"]).validate().pairs
    assert chosen == ["en-pt-BR", "pt-BR-zh-Hant"]
    langs = ["en", "pt-BR", "zh-Hant"]
    assert pairs_to_mine(langs, chosen) == [("en", "pt-BR"), ("pt-BR", "zh-Hant")]


@pytest.mark.parametrize(
    ("lang", "spelled"),
    [
        ("en", "en"),
        ("deu", "deu"),
        ("zh-Hant", "zh-Hant"),
        ("zh-hant", "zh-Hant"),
        ("pt_BR", "pt-BR"),
        ("pt-br", "pt-BR"),
        ("EN", "en"),
        ("sr-latn-rs", "sr-Latn-RS"),
        ("es-419", "es-419"),
        ("de-DE-1901", "de-DE-1901"),
        ("zh-YUE", "zh-yue"),
    ],
)
def test_check_lang_spells_codes_as_bcp47_does(lang: str, spelled: str) -> None:
    assert check_lang(lang) == spelled


@pytest.mark.parametrize("lang", ["EN DE", "", "en de", "e", "english", "en/../x", "1a", "es\n"])
def test_check_lang_rejects(lang: str) -> None:
    with pytest.raises(ConfigError, match="is not a language code"):
        check_lang(lang)


def test_a_code_too_long_to_keep_is_said_so() -> None:
    with pytest.raises(ConfigError, match="longer than the 16 characters"):
        check_lang("hy-Latn-IT-arevela")


def test_two_spellings_of_a_language_are_one_language(home: Path, db_url: str) -> None:
    """``pt_br``, ``PT-BR`` and ``pt-BR`` are one language with one vector collection; a pair
    of codes with subtags chosen at ``init`` keeps the home usable (its stored name
    ``en-pt-BR`` once failed to parse at every open)."""
    eye = np.eye(4, dtype=np.float32)
    with bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1, pairs=["EN:pt_br"]) as db:
        db.ingest_embeddings("en", ["one", "two"], eye[:2])
        db.ingest_embeddings("pt_br", ["um"], eye[:1], source="a")
        db.ingest_embeddings("PT-BR", ["dois"], eye[1:2], source="b")
    with bitextdb.open(home, db=db_url) as db:
        stats = db.stats()
        assert sorted(stats["languages"]) == ["en", "pt-BR"]
        assert list(stats["pairs"]) == ["en-pt-BR"]
        assert db.index.languages() == ["en", "pt-BR"]
        assert [r["lang"] for r in db.sources("pt-br")] == ["pt-BR", "pt-BR"]
        assert db.translate("one", "EN", "pt_BR").hits[0].text == "um"
        assert db.export("pt-br:en", output=str(home / "p.tsv"))["rows"] == 2


def test_a_home_with_a_code_spelled_the_old_way_is_refused(home: Path, db_url: str) -> None:
    with bitextdb.init(home, db=db_url, model="synthetic", dim=4, k=1) as db:
        db.ingest_embeddings("pt-BR", ["um"], np.eye(4, dtype=np.float32)[:1])
        with db.db.session() as s:  # as a version that kept codes as typed stored them
            s.execute(sa.text("UPDATE sources SET lang = 'pt-br'"))
    with pytest.raises(ConfigError, match=r"pt-br \(now pt-BR\)"):
        bitextdb.open(home, db=db_url)


def test_stored_settings_that_no_longer_parse_are_said_so_and_init_mends_them(
    home: Path,
) -> None:
    """A development version stored ``pairs`` as ``en-pt-br``, which reads two ways now;
    the error blamed the user's input, and ``config --pairs`` could not open the home."""
    bitextdb.init(home, model="synthetic", dim=4).close()
    with sqlite3.connect(home / "bitextdb.sqlite") as conn:
        conn.execute("""UPDATE settings SET value = '["en-pt-br"]' WHERE key = 'pairs'""")
    with pytest.raises(ConfigError, match=r"stored settings do not hold: 'en-pt-br'.*init"):
        bitextdb.open(home)
    bitextdb.init(home, pairs=["en:pt-BR"]).close()
    with bitextdb.open(home) as db:
        assert db.settings.pairs == ["en-pt-BR"]


def test_settings_validate() -> None:
    assert Settings(pairs=["en-de", "de:en", "fr-en"]).validate().pairs == ["de-en", "en-fr"]
    for bad in (
        {"k": 0},
        {"k": 65},
        {"mine_path": "fast"},
        {"batch_size": 0},
        {"min_chars": 5, "max_chars": 4},
        {"pairs": ["en-en"]},
        {"pairs": []},  # nothing would ever be mined
        {"threshold": float("nan")},  # no margin is above it, and JSON has no NaN
        {"threshold": float("inf")},
        {"max_chars": 10**20},  # stored as a float it then refused every ingest
        {"exact_limit": -1},
        {"hnsw_ef": 0},
        {"hnsw_m": 0},
        {"bulk_ratio": float("nan")},
        {"max_seq_length": 0},
    ):
        with pytest.raises(ConfigError):
            Settings(**bad).validate()  # type: ignore[arg-type]
    assert Settings(threshold=-5.0, exact_limit=0).validate().threshold == -5.0
    assert Settings.from_dict({"model": "m", "unknown": 1}).model == "m"


# -- the installed package -------------------------------------------------------------------
def test_wheel_layout_finds_its_migrations(tmp_path: Path) -> None:
    """Laid out as the wheel installs it (migrations in bitextdb/_migrations), it works."""
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "bitextdb", site / "bitextdb", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "migrations", site / "bitextdb" / "_migrations")
    script = (
        "import sys; from bitextdb.db import Database; from bitextdb.db.engine import "
        "migrations_dir; print(migrations_dir()); d = Database(sys.argv[1]); d.upgrade(); "
        "print(d.current_revision() == d.head_revision())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'w.sqlite'}"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    found, at_head = out.stdout.split()
    assert Path(found) == site / "bitextdb" / "_migrations"
    assert at_head == "True"


@pytest.mark.slow
def test_wheel_contains_the_migrations(tmp_path: Path) -> None:
    try:
        import hatchling  # noqa: F401

        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []  # pip fetches hatchling into an isolated build env, if it can
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",  # no network: only what is installed or in pip's find-links
            *isolation,
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wheels = list(tmp_path.glob("bitextdb-*.whl"))
    if out.returncode != 0 or not wheels:
        lines = (out.stderr + out.stdout).strip().splitlines()
        why = [ln.strip() for ln in lines if "hatchling" in ln or "ERROR" in ln] or lines[-1:]
        pytest.skip(f"cannot build a wheel offline: {' | '.join(why[:2])}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    assert "bitextdb/_migrations/env.py" in names
    assert "bitextdb/_migrations/versions/0001_initial_schema.py" in names
    assert "bitextdb/db/engine.py" in names


def test_embedded_home_can_be_moved(tmp_path: Path) -> None:
    """The embedded stores travel with the folder: a moved home opens its own data."""
    old, new = tmp_path / "old", tmp_path / "new"
    bitextdb.init(old, model="synthetic", dim=4).close()
    db = bitextdb.open(old)
    report = db.ingest_embeddings(
        "en", ["one", "two", "x", ""], np.eye(4, dtype=np.float32), mine=False
    )
    assert report["ingested"][0]["read"] == 4
    assert report["ingested"][0]["skipped"] == {"too_short": 1, "empty": 1}
    db.close()
    shutil.move(old, new)
    db = bitextdb.open(new)
    try:
        assert db.locations.db == f"sqlite:///{new.resolve() / 'bitextdb.sqlite'}"
        assert db.stats()["languages"]["en"]["sentences"] == 2
    finally:
        db.close()
    assert not old.exists()


def test_a_home_from_an_older_version_opens_its_own_sqlite_file(tmp_path: Path) -> None:
    """Older versions wrote the embedded SQLite file's absolute path into the locations
    file; a copy of such a home must open its own data, not the original's."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    bitextdb.init(original, model="synthetic", dim=4).close()
    locations = original / "bitextdb.json"
    written = json.loads(locations.read_text())
    written["db"] = f"sqlite:///{original.resolve() / 'bitextdb.sqlite'}"  # the old format
    locations.write_text(json.dumps(written))
    shutil.copytree(original, copy)
    with bitextdb.open(copy) as db:
        assert db.locations.db == f"sqlite:///{copy.resolve() / 'bitextdb.sqlite'}"
        db.ingest_embeddings("en", ["one", "two"], np.eye(2, 4, dtype=np.float32), mine=False)
    with bitextdb.open(original) as db:
        assert "en" not in db.stats()["languages"]
    elsewhere = tmp_path / "elsewhere.sqlite"  # a SQLite file of another name stays as given
    written["db"] = f"sqlite:///{elsewhere}"
    locations.write_text(json.dumps(written))
    assert resolve_locations(original).db == f"sqlite:///{elsewhere}"


def test_a_migration_that_fails_half_way_leaves_nothing_of_itself(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill during ``init`` must not leave tables that the next ``init`` trips over."""
    from alembic.operations import Operations

    created: list[str] = []
    original = Operations.create_table

    def fail_on_the_third(self, name, *columns, **kw):  # type: ignore[no-untyped-def]
        if len(created) == 2:
            raise RuntimeError("killed")
        created.append(name)
        return original(self, name, *columns, **kw)

    db = Database(db_url)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(Operations, "create_table", fail_on_the_third)
            with pytest.raises(RuntimeError, match="killed"):
                db.upgrade()
        assert len(created) == 2
        assert not (TABLES & table_names(db))
        assert db.current_revision() is None
        db.upgrade()
        assert db.current_revision() == db.head_revision()
    finally:
        db.dispose()


def test_add_sentences_gives_the_ids_the_database_holds(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All new (without a look-up: on SQLite worked out from the largest id, on PostgreSQL
    returned by the insert), some stored already (those looked up), after the largest id
    was deleted, and where SQLite picks ids at random (the largest id possible taken): every
    id returned is the stored one."""
    from bitextdb.db import corpus
    from bitextdb.readers import text_hash

    sqlite = db_url.startswith("sqlite")
    lookups = []
    known = corpus.known
    monkeypatch.setattr(corpus, "known", lambda *a: lookups.append(1) or known(*a))

    def add(texts: list[str]) -> int:
        """Add ``texts``; how many look-ups that took. Checks the ids returned."""
        del lookups[:]
        by_hash = {text_hash(t): t for t in texts}
        with db.session(writes=True) as s:
            ids = corpus.add_sentences(s, "en", by_hash)
            rows = s.execute(sa.text("SELECT text_hash, id FROM sentences WHERE lang = 'en'"))
            assert ids == {h: i for h, i in rows if h in by_hash}
        return len(lookups)

    db = Database(db_url)
    try:
        db.upgrade()
        assert add([f"one {i}" for i in range(50)]) == 0
        assert add([f"two {i}" for i in range(30)] + [f"one {i}" for i in range(10)]) == 1
        with db.session(writes=True) as s:
            s.execute(sa.text("DELETE FROM sentences WHERE id = (SELECT max(id) FROM sentences)"))
        assert add([f"three {i}" for i in range(20)]) == 0
        if sqlite:
            with db.session(writes=True) as s:
                s.execute(
                    sa.text(
                        "INSERT INTO sentences (id, lang, text, text_hash, indexed, created_at) "
                        "VALUES (9223372036854775807, 'en', 'last', 'h', 0, '2026-01-01')"
                    )
                )
            assert add([f"four {i}" for i in range(20)]) == 1  # the shortcut saw through it
    finally:
        db.dispose()


def test_mark_indexed_marks_exactly_the_ids_given(db_url: str) -> None:
    """Runs of consecutive ids, single ids, repeats and any order."""
    from bitextdb.db import corpus
    from bitextdb.readers import text_hash

    db = Database(db_url)
    try:
        db.upgrade()
        texts = [f"sentence {i}" for i in range(12)]
        with db.session() as s:
            ids = corpus.add_sentences(s, "en", {text_hash(t): t for t in texts})
        by_id = sorted(ids.values())
        chosen = [by_id[i] for i in (9, 0, 1, 2, 6, 10, 11, 2, 4)]
        with db.session(writes=True) as s:
            corpus.mark_indexed(s, chosen)
            corpus.mark_indexed(s, [])
        with db.session() as s:
            indexed = {
                sid for sid, flag in s.execute(sa.text("SELECT id, indexed FROM sentences")) if flag
            }
        assert indexed == set(chosen)
    finally:
        db.dispose()


def test_two_homes_cannot_share_one_sql_database(db_url: str, tmp_path: Path) -> None:
    """Each home's Qdrant Edge store is its own: a second home given the first one's
    --db would hold half of the vectors. The database and the store keep one name."""
    first, second = tmp_path / "first", tmp_path / "second"
    with bitextdb.init(first, db=db_url, model="synthetic", dim=4) as db:
        db.ingest_embeddings("en", ["one sentence"], np.ones((1, 4), dtype=np.float32))
        store_id = (db.locations.vectors_dir / "store-id").read_text().strip()
    with pytest.raises(ConfigError, match="another home"):
        bitextdb.init(second, db=db_url, model="synthetic", dim=4, threshold=1.5, min_chars=9)
    # refused before anything was written: the first home's settings, the second's file
    with bitextdb.open(first, db=db_url) as db:
        assert (db.settings.threshold, db.settings.min_chars) == (1.0, 2)
    assert not (second / "bitextdb.json").exists()
    with pytest.raises(ConfigError, match="another home"):
        bitextdb.open(second, db=db_url)
    assert not (second / "vectors" / "store-id").exists()
    bitextdb.open(first, db=db_url).close()  # the first is untouched
    # a home whose vectors folder was lost: named again, as the message says, it opens
    (second / "vectors").mkdir(exist_ok=True)
    (second / "vectors" / "store-id").write_text(store_id)
    bitextdb.open(second, db=db_url).close()


def test_a_database_and_store_from_before_names_are_named_at_open(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bitextdb.init(home, model="synthetic", dim=4).close()
    (home / "vectors" / "store-id").unlink()
    with Database(f"sqlite:///{home / 'bitextdb.sqlite'}").engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM settings WHERE key = 'edge_store'"))
    with bitextdb.open(home) as db:
        kept = db.db.note("edge_store")
    assert kept and (home / "vectors" / "store-id").read_text().strip() == kept


def test_of_two_homes_claiming_an_unnamed_database_at_once_one_is_refused(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read, check, then write: two homes opening a database that names no store yet could
    both pass the check (seen on PostgreSQL). The name is now written only where none is,
    so the second to write learns of the first."""
    first, second = tmp_path / "first", tmp_path / "second"
    bitextdb.init(first, db=db_url, model="synthetic", dim=4).close()
    database = Database(db_url)
    with database.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM settings WHERE key = 'edge_store'"))
    database.dispose()
    bitextdb.init(second, db=f"sqlite:///{tmp_path / 'own.sqlite'}", model="synthetic", dim=4)
    (second / "bitextdb.json").unlink()
    read = Database.note

    def the_first_claims_meanwhile(self: Database, key: str):  # type: ignore[no-untyped-def]
        found = read(self, key)
        if key == "edge_store" and found is None and not claimed:
            claimed.append(first)
            bitextdb.open(first, db=db_url).close()  # names it, between read and write
        return found

    claimed: list[Path] = []
    monkeypatch.setattr(Database, "note", the_first_claims_meanwhile)
    with pytest.raises(ConfigError, match="another home"):
        bitextdb.open(second, db=db_url)
    assert claimed
    monkeypatch.undo()
    bitextdb.open(first, db=db_url).close()


def test_claim_note_keeps_the_first_value(db_url: str, home: Path) -> None:
    bitextdb.init(home, db=db_url, model="synthetic", dim=4).close()
    database = Database(db_url)
    try:
        assert database.claim_note("claimed", "a") == "a"
        assert database.claim_note("claimed", "b") == "a"
    finally:
        database.dispose()


def test_a_home_keeps_the_database_it_was_made_with(tmp_path: Path) -> None:
    """Given a second, empty database, a home would write that database's vectors over
    the first one's (the same ids)."""
    home = tmp_path / "home"
    with bitextdb.init(home, model="synthetic", dim=4) as db:
        db.ingest_embeddings("en", ["one sentence"], np.ones((1, 4), dtype=np.float32))
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    with pytest.raises(ConfigError, match="belong to another SQL database"):
        bitextdb.init(home, db=other, model="synthetic", dim=4)
    assert not json.loads((home / "bitextdb.json").read_text()).get("db")  # unchanged
    bitextdb.open(home).close()
    # refused before the other database gained a schema (it had eleven tables after)
    with sqlite3.connect(tmp_path / "other.sqlite") as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    # the way back for a lost vectors folder is not offered to a home that has its own
    second = tmp_path / "second"
    with bitextdb.init(second, model="synthetic", dim=4) as db:
        db.ingest_embeddings("en", ["another sentence"], np.ones((1, 4), dtype=np.float32))
    theirs = f"sqlite:///{home / 'bitextdb.sqlite'}"
    with pytest.raises(ConfigError, match="is the database of the home") as refused:
        bitextdb.open(second, db=theirs)
    assert "was lost" not in str(refused.value)


def test_a_copied_home_is_refused_the_original_homes_database(tmp_path: Path) -> None:
    """A copy (cp -a) keeps its original's store name, so each home took the other's
    SQLite file through --db, and both ended up with vectors the other's SQL lacked."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    with bitextdb.init(original, model="synthetic", dim=4) as db:
        db.ingest_embeddings("en", ["one sentence"], np.ones((1, 4), dtype=np.float32))
    shutil.copytree(original, copy)
    for home, other in ((original, copy), (copy, original)):
        theirs = f"sqlite:///{other / 'bitextdb.sqlite'}"
        for call in (bitextdb.open, bitextdb.init):
            with pytest.raises(ConfigError, match=f"is the database of the home {other}"):
                call(home, db=theirs)
    for home in (original, copy):  # each still opens its own, untouched
        with bitextdb.open(home) as db:
            assert db.check().ok and db.stats()["languages"]["en"]["sentences"] == 1


def test_a_database_from_before_names_is_taken_only_by_the_home_it_was_filled_from(
    tmp_path: Path,
) -> None:
    first = tmp_path / "first"
    with bitextdb.init(first, model="synthetic", dim=4) as db:
        db.ingest_embeddings("en", ["one", "two"], np.eye(2, 4, dtype=np.float32))
    # a file of its own, not one in a home (that is refused to every other home at once)
    (first / "bitextdb.sqlite").rename(tmp_path / "shared.sqlite")
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    (first / "vectors" / "store-id").unlink()  # as a version before names left them
    with Database(url).engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM settings WHERE key = 'edge_store'"))
    with pytest.raises(ConfigError, match=r"lacks vectors .* \(en 0 of 2\)"):
        bitextdb.open(tmp_path / "empty", db=url)
    with bitextdb.open(first, db=url) as db:  # the home that holds them takes it
        assert db.db.note("edge_store") == (first / "vectors" / "store-id").read_text().strip()


def test_a_lock_whose_connection_was_killed_ends_quietly(postgres_url: str) -> None:
    """A killed PostgreSQL connection took its advisory locks with it: releasing them
    raised `unexpected OperationalError` (exit 1) over whatever had happened."""
    import hashlib

    name = f"test-lock-{uuid.uuid4().hex}"
    database = Database(postgres_url)
    with database.engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
    scoped = f"{schema}\x1f{name}".encode()
    key = int.from_bytes(hashlib.blake2b(scoped, digest_size=8).digest(), "big") >> 1
    try:
        with database.advisory_locks([name, name + "-2"]):
            with database.engine.connect() as other:
                killed = other.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                        "'advisory' AND classid::bigint = :high AND objid::bigint = :low"
                    ),
                    {"high": key >> 32, "low": key & 0xFFFFFFFF},
                ).all()
            assert len(killed) == 1 and killed[0][0]
        with database.advisory_lock(name):  # free again, on a new connection
            pass
    finally:
        database.dispose()


def test_advisory_locks_of_two_schemas_do_not_meet(postgres_url: str, postgres_base: str) -> None:
    """Advisory locks span the whole PostgreSQL database: two bitextdb databases in two
    schemas of it waited on each other's locks of the same name (every miner of en-de)."""
    import threading

    from tests.crash_helpers import pg_schema

    name = "bitextdb-mine-de-en"
    holder, same = Database(postgres_url), Database(postgres_url)
    with pg_schema(postgres_base) as other_url:
        other = Database(other_url)
        entered = {"same": threading.Event(), "other": threading.Event()}

        def take(database: Database, which: str) -> None:
            with database.advisory_lock(name):
                entered[which].set()

        try:
            with holder.advisory_lock(name):
                threads = {
                    which: threading.Thread(target=take, args=(database, which), daemon=True)
                    for which, database in (("same", same), ("other", other))
                }
                for thread in threads.values():
                    thread.start()
                assert entered["other"].wait(30)  # another schema: not held up
                assert not entered["same"].wait(0.5)  # the same schema: waits
            assert entered["same"].wait(30)  # and goes on once the lock is released
            for thread in threads.values():
                thread.join(30)
        finally:
            for database in (holder, same, other):
                database.dispose()


def test_a_search_path_naming_no_schema_is_one_clear_sentence(
    postgres_base: str, home: Path
) -> None:
    """CREATE TABLE failed with psycopg's InvalidSchemaName as an 'unexpected' error."""
    missing = f"t_missing_{uuid.uuid4().hex[:8]}"
    base = postgres_base.split("?options=")[0]
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{missing}"
    with pytest.raises(ConfigError, match=rf"search_path \({missing}\) names none that exists"):
        bitextdb.init(home, db=url, model="synthetic", dim=4)
    engine = sa.create_engine(base)
    try:
        with engine.connect() as conn:
            made = conn.execute(
                sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"),
                {"name": missing},
            ).scalar()
        assert made == 0
    finally:
        engine.dispose()


def test_a_search_path_that_finds_tables_in_a_later_schema_is_refused(
    postgres_url: str, postgres_base: str, tmp_path: Path
) -> None:
    """``search_path=empty,theirs`` read the other database's tables (db status said
    0007) while ``init`` would make new ones in the first schema, and never did."""
    from tests.crash_helpers import pg_schema

    bitextdb.init(tmp_path / "theirs", db=postgres_url, model="synthetic", dim=4).close()
    theirs = postgres_url.rsplit("%3D", 1)[1]
    with pg_schema(postgres_base) as empty_url:
        both = f"{empty_url},{theirs}"
        for attempt in (
            lambda: Database(both).current_revision(),
            lambda: bitextdb.init(tmp_path / "mine", db=both, model="synthetic", dim=4),
        ):
            with pytest.raises(
                ConfigError, match=f"finds bitextdb's tables in the schema {theirs}"
            ):
                attempt()


def test_a_schema_named_with_capitals_is_told_to_be_quoted(
    postgres_base: str, tmp_path: Path
) -> None:
    name = f"T_Upper_{uuid.uuid4().hex[:6]}"
    base = postgres_base.split("?options=")[0]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        unquoted = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"
        with pytest.raises(ConfigError, match="a name with capitals goes in quotes"):
            bitextdb.init(tmp_path / "h", db=unquoted, model="synthetic", dim=4)
        quoted = unquoted.replace(f"%3D{name}", f"%3D%22{name}%22")
        bitextdb.init(tmp_path / "h", db=quoted, model="synthetic", dim=4).close()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        engine.dispose()


def test_two_upgrades_of_a_new_postgresql_database_at_once_both_succeed(
    postgres_url: str,
) -> None:
    """Both created alembic_version and the second failed with a raw IntegrityError."""
    import threading

    databases = [Database(postgres_url) for _ in range(3)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(databases))

    def upgrade(database: Database) -> None:
        start.wait()
        try:
            database.upgrade()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(d,)) for d in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert {d.current_revision() for d in databases} == {databases[0].head_revision()}
    finally:
        for database in databases:
            database.dispose()


@pytest.mark.parametrize("content", ["[1, 2]", '{"db": 5}', '"text"'])
def test_a_settings_file_of_another_shape_is_refused(tmp_path: Path, content: str) -> None:
    """bitextdb.json holding a list or a number where init writes a URL was ignored, and
    the home opened its own SQLite file as if the file named nothing."""
    home = tmp_path / "home"
    bitextdb.init(home, model="synthetic", dim=4).close()
    (home / "bitextdb.json").write_text(content)
    with pytest.raises(ConfigError, match="is not what `bitextdb init` writes"):
        bitextdb.open(home)
