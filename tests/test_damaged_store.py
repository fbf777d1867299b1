"""A Qdrant Edge shard whose files were damaged (cut short, overwritten, a configuration
that no longer parses): ``check`` names it, ``check --repair`` sets it aside and makes it
again, from the copy written beside it (the mirror) and, where that is damaged too, by
encoding the sentences again. Before, ``check`` read only the mirror and said
"consistent", and every command that read the shard failed with the binding's words."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import bitextdb
from bitextdb.cli import cli
from bitextdb.errors import StoreUnavailableError
from tests.models import random_sentences, translate
from tests.test_miner import assert_equals_reference, make_vectors


def _chunk(home: Path, lang: str) -> Path:
    (found,) = (home / "vectors" / lang).glob("segments/*/vector_storage/vectors/chunk_0.mmap")
    return found


def _overwrite(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.write(np.random.default_rng(0).bytes(size))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "chunk_cut_short": lambda home: os.truncate(_chunk(home, "de"), 0),
    "chunk_overwritten": lambda home: _overwrite(_chunk(home, "de"), 4 * 8 * 20),
    "config_garbled": lambda home: (home / "vectors" / "de" / "edge_config.json").write_text("{"),
}


def _given_home(home: Path) -> list[tuple[str, str]]:
    """An en/de home of given vectors (no model to encode again with); its pairs."""
    with bitextdb.init(home, model="given", dim=8, k=3) as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(30)], make_vectors(30, 8, 1, 7))
        de = make_vectors(30, 8, 1, 0) + 0.05 * make_vectors(30, 8, 2, 0)
        db.ingest_embeddings("de", [f"de {i}" for i in range(30)], de)
        return _pairs(db)


def _pairs(db: bitextdb.BitextDB) -> list[tuple[str, str]]:
    path = db.locations.home / "pairs.tsv"
    db.export("de-en", output=str(path), fmt="tsv")
    rows = [line.split("\t") for line in path.read_text("utf-8").splitlines()]
    return sorted((src, tgt) for _, src, tgt in rows)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_shard_is_named_and_made_again_from_its_copy(home: Path, damage: str) -> None:
    before = _given_home(home)
    DAMAGE[damage](home)
    with bitextdb.open(home) as db:
        report = db.check()
        assert not report.ok and not report.only_work_waiting
        assert set(report.damaged) == {"de"}
        with pytest.raises(StoreUnavailableError, match=r"check --repair"):
            db.translate("en 1", "en", "de")  # the binding's own words, and what to do
    result = CliRunner().invoke(cli, ["-q", "--home", str(home), "check"])
    assert result.exit_code == 1 and "de: the vector store is damaged:" in result.stdout
    with bitextdb.open(home) as db:
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert repaired.repaired["shards_set_aside"] == 1
        assert repaired.repaired["vectors_copied_back"] == 30
        assert_equals_reference(db, "de", "en")
        assert _pairs(db) == before
    (aside,) = (home / "damaged-vectors").iterdir()  # kept, out of the store's way
    assert aside.name.startswith("de-") and "de" in bitextdb.open(home).index.languages()


def _swap_rows(path: Path, width: int, a: int, b: int) -> None:
    data = bytearray(path.read_bytes())
    row_a, row_b = data[a * width : (a + 1) * width], data[b * width : (b + 1) * width]
    data[a * width : (a + 1) * width], data[b * width : (b + 1) * width] = row_b, row_a
    path.write_bytes(bytes(data))


def test_a_damaged_copy_beside_the_shard_is_not_trusted_over_the_shard(
    home: Path, static_model: Path
) -> None:
    """Rows of the mirror overwritten, or two of them swapped: the shard, whole, gives them
    back (a check had rebuilt the copy from a damaged shard, and a repair trusted a damaged
    copy, or encoded again vectors that may have been given)."""
    english = random_sentences(40, seed=2)
    with bitextdb.init(home, model=str(static_model)) as db:
        db.ingest_texts("en", english)
        db.ingest_texts("de", [translate(s, "de") for s in english[:30]])
        before = _pairs(db)
    mirror = home / "vectors" / "de" / "mirror.vec"
    _overwrite(mirror, 4 * 64 * 10)
    with bitextdb.open(home) as db:
        assert "differ from the copy" in db.check().damaged["de"]
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert repaired.repaired["vectors_copied_back"] == 30  # the shard's, all of them
        assert "vectors_restored" not in repaired.repaired  # nothing to encode again
        assert _pairs(db) == before
    _swap_rows(home / "vectors" / "de" / "mirror.vec", 4 * 64, 0, 1)
    with bitextdb.open(home) as db:
        assert db.check().damaged["de"]
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert repaired.repaired["copy_rows_differing"] == 2  # the shard's are taken
        assert repaired.repaired["vectors_copied_back"] == 30
        assert "vectors_restored" not in repaired.repaired
        assert_equals_reference(db, "de", "en")
        assert _pairs(db) == before


def test_a_check_leaves_the_copy_of_a_shard_that_lost_points_alone(home: Path) -> None:
    """A shard that lost most of its points (its id mapping cut short): a plain check
    rebuilt the copy from it, and the copy's vectors were gone before any repair."""
    before = _given_home(home)
    mirror = home / "vectors" / "de" / "mirror.vec"
    size = mirror.stat().st_size
    (mapping,) = (home / "vectors" / "de").glob("segments/*/mutable_id_tracker.mappings")
    os.truncate(mapping, 100)
    with bitextdb.open(home) as db:
        # mined against it, the lists would be stored wrong (an ingest did so, exit 0)
        with pytest.raises(StoreUnavailableError, match=r"de vector store holds \d+ of the 30"):
            db.mine()
        assert db.check().damaged.get("de"), "the lost points are seen"
        assert mirror.stat().st_size == size
        repaired = db.check(repair=True, deep=True)
        assert repaired.ok, repaired.as_dict()
        assert repaired.repaired["vectors_copied_back"] == 30
        assert _pairs(db) == before


def test_given_vectors_lost_from_both_copies_stay_missing_without_a_crash(home: Path) -> None:
    """No model to encode them again: they stay missing, and the repair says so and ends.
    (A tester saw a repair fail on the search bands of sentences whose points were gone,
    "No point with id ..."; the bands are now written only for sentences with a point.)"""
    _given_home(home)
    os.truncate(_chunk(home, "de"), 0)
    mirror = home / "vectors" / "de" / "mirror.vec"
    _overwrite(mirror, mirror.stat().st_size)
    with bitextdb.open(home) as db:
        repaired = db.check(repair=True)
        assert repaired.repaired["shards_set_aside"] == 1 and not repaired.ok
        assert repaired.languages["de"]["missing_vectors"] + repaired.unindexed > 0
        assert db.check(repair=True).repaired is not None  # again: no crash either
