"""Split records (paragraphs, documents) into sentences, with Wikimedia's sentencex.

Corpora such as Wikipedia or news often come a paragraph or a document per record, while
mining wants sentences.  sentencex knows the abbreviations and sentence-final punctuation
of about 300 languages (falling back along its language chains, so ``pt-br`` gets
Portuguese rules and an unknown code English ones) and is written in Rust, so splitting
costs little beside encoding.  Its chains match lower-case codes with hyphens only
(``pt-BR`` got English rules), so codes are given to it in that form.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bitextdb.errors import InputError

__all__ = ["Splitter", "sentence_splitter"]

#: Turns a record's raw text into the raw texts of its sentences, in order.
Splitter = Callable[[str], list[str]]

# a line break always ends a sentence: titles and list items carry no final punctuation
_LINE_BREAK = re.compile("\r\n|[\r\n\u2028\u2029\x85]")


def sentence_splitter(lang: str) -> Splitter:
    """A :data:`Splitter` with the rules of ``lang`` (an ISO 639 code, optionally with a
    region or script such as ``pt-BR``).

    A record is cut at every line break, and each line into sentences; pieces that hold
    only white space are dropped.  Raises :class:`InputError` when sentencex is missing.
    """
    try:
        import sentencex
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise InputError(
            "Splitting into sentences needs the sentencex package: pip install sentencex."
        ) from exc

    # sentencex knows languages, not regions: given `es-MX` it falls back to English rules
    # (`La Sra.` became a sentence), and the one regional chain it has, pt-BR, is pt's
    code = lang.lower().replace("_", "-").split("-")[0]

    def split(text: str) -> list[str]:
        pieces: list[str] = []
        for line in _LINE_BREAK.split(text):
            if line and not line.isspace():
                pieces.extend(p for p in sentencex.segment(code, line) if p and not p.isspace())
        return pieces

    return split
