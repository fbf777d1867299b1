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
from typing import Any

from bitextdb.errors import InputError

__all__ = ["Splitter", "sentence_splitter"]

#: Turns a record's raw text into the raw texts of its sentences, in order.
Splitter = Callable[[str], list[str]]

# a line break always ends a sentence: titles and list items carry no final punctuation
_LINE_BREAK = re.compile("\r\n|[\r\n\u2028\u2029\x85]")
# white space outside ASCII (no-break, thin, ideographic spaces): sentencex 0.x slices a
# line by bytes around a period and panics when one of these stands before it ("B\u00a0.")
_WIDE_SPACE = re.compile(r"[^\S\x00-\x7f]")


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
                pieces.extend(p for p in _segment(sentencex, code, line) if p and not p.isspace())
        return pieces

    return split


def _segment(sentencex: Any, code: str, line: str) -> list[str]:
    """sentencex's sentences of one line, cut from the line itself.

    sentencex is given the line with its wide spaces made ASCII ones, one character for
    one, and its pieces (which put the line together again) are cut at the same places
    from the original, so the stored text keeps its spaces.  Should sentencex still panic,
    the line stays one sentence rather than losing the file.
    """
    safe = _WIDE_SPACE.sub(" ", line)
    try:
        pieces = sentencex.segment(code, safe)
    except BaseException as exc:  # a Rust panic is a BaseException (pyo3's PanicException)
        if type(exc).__name__ != "PanicException":
            raise
        return [line]
    if "".join(pieces) != safe:  # never seen: then the cut places cannot be trusted
        return [line]
    cut: list[str] = []
    start = 0
    for piece in pieces:
        cut.append(line[start : start + len(piece)])
        start += len(piece)
    return cut
