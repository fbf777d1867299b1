"""A three-sentence English/German corpus mined through the CLI, for comparing run options."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import bitextdb
from bitextdb.cli import cli
from bitextdb.export import iter_records

SMALL_CORPUS = {
    "en": "the dog sleeps in the house\nmy friend reads a book\nthe city is big\n",
    "de": "der hund schläft im haus\nmein freund liest ein buch\ndie stadt ist groß\n",
}


def mine_small_corpus(where: Path, model: Path, *ingest_args: str) -> list[tuple[str, str]]:
    """``init`` a home at ``where`` with ``model``, ingest :data:`SMALL_CORPUS` with
    ``ingest_args`` added to each ``ingest``, and return the accepted (de, en) pairs."""
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "--home", str(where), "init", "--model", str(model)])
    assert result.exit_code == 0, result.output
    for lang, text in SMALL_CORPUS.items():
        path = where.parent / f"{where.name}-{lang}.txt"
        path.write_text(text, encoding="utf-8")
        args = ["-q", "--home", str(where), "ingest", str(path), "--lang", lang, *ingest_args]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    with bitextdb.open(where) as db:
        return [(r["src"], r["tgt"]) for r in iter_records(db, "de-en")]
