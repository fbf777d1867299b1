"""Language identification of sentences (``ingest --lid``), with py3langid.

Web crawls put English boilerplate in a German corpus and German quotes in an English one;
such a sentence pairs with its copy on the other side (cosine near 1, the best margin of
all) or crowds the neighbour lists of real translations.  py3langid (a faster langid.py:
a naive Bayes model over byte n-grams of 140 languages, shipped inside the package) tells
which language a sentence is in, at about 24,000 sentences a second on one core here
(`benchmarks/lid.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from typing import Any

from bitextdb.errors import InputError

__all__ = ["DEFAULT_LID_THRESHOLD", "LanguageCheck", "language_check"]

#: a sentence is dropped when another language gets at least this probability: a majority
DEFAULT_LID_THRESHOLD = 0.5

#: True for a sentence to keep.
LanguageCheck = Callable[[str], bool]

#: sentences whose answer is remembered: crawls repeat their boilerplate thousands of times,
#: and the reader meets every repeat before deduplication does
REMEMBERED = 1 << 16

# codes of ours whose language py3langid calls by another code
_ALIASES = {"nb": "no", "iw": "he", "in": "id", "fil": "tl"}


@cache
def _identifier() -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise InputError(
            "Language identification (--lid) needs py3langid: pip install 'bitextdb[lid]'."
        ) from exc
    # probabilities that add up to one over the languages, not raw log-likelihoods
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_check(
    lang: str, threshold: float = DEFAULT_LID_THRESHOLD, accept: Iterable[str] = ()
) -> LanguageCheck:
    """What keeps the sentences of ``lang`` (its region or script aside: ``pt-BR`` is
    ``pt``) and drops those that py3langid puts in another language — one not in
    ``accept`` either — with a probability of at least ``threshold``.

    Short or ambiguous sentences, where no language wins that clearly, are kept.  The
    answers for the last :data:`REMEMBERED` distinct sentences are remembered.  Raises
    :class:`InputError` for a threshold outside (0, 1] or a language py3langid lacks.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InputError(f"The --lid threshold must be a number, not {threshold!r}.")
    if not 0 < threshold <= 1:
        raise InputError(f"The --lid threshold must be above 0 and at most 1, not {threshold}.")
    identifier = _identifier()
    known = set(identifier.nb_classes)
    wanted = {_code(code, known) for code in (lang, *accept)}
    limit = float(threshold)

    @lru_cache(maxsize=REMEMBERED)
    def keep(sentence: str) -> bool:
        found, probability = identifier.classify(sentence)
        return found in wanted or probability < limit

    return keep


def _code(lang: str, known: set[str]) -> str:
    code = lang.split("-")[0].split("_")[0].lower()
    code = _ALIASES.get(code, code)
    if code not in known:
        raise InputError(
            f"py3langid does not know {lang!r}, so --lid cannot check it; it knows: "
            f"{', '.join(sorted(known))}."
        )
    return code
