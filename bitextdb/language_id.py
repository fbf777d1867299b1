"""Language identification of sentences (``ingest --lid``), with py3langid.

Web crawls put English boilerplate in a German corpus and German quotes in an English one;
such a sentence pairs with its copy on the other side (cosine near 1, the best margin of
all) or crowds the neighbour lists of real translations.  py3langid (a faster langid.py:
a naive Bayes model over byte n-grams of 140 languages, shipped inside the package) tells
which language a sentence is in, at about 24,000 sentences a second on one core here
(`benchmarks/lid.py`).
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import cache, lru_cache
from typing import Any, TypeVar

from bitextdb.errors import InputError

__all__ = [
    "DEFAULT_LID_THRESHOLD",
    "LanguageCheck",
    "ParallelCheck",
    "default_workers",
    "language_check",
]

T = TypeVar("T")

#: a sentence is dropped when another language gets at least this probability: a majority
DEFAULT_LID_THRESHOLD = 0.5

#: True for a sentence to keep.
LanguageCheck = Callable[[str], bool]

#: sentences whose answer is remembered: crawls repeat their boilerplate thousands of times,
#: and the reader meets every repeat before deduplication does
REMEMBERED = 1 << 16

#: sentences a worker process classifies per call
CHUNK = 2048
#: sentences checked in this process before worker processes start: a file shorter than
#: this is done before they would be up (a process takes about a second to start)
POOL_AFTER = 16_384

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


def default_workers() -> int:
    """Worker processes for ``--lid`` (``BITEXTDB_LID_WORKERS``, else by the cores this
    process may use): one for every core beyond the first, at least one, at most four.
    Even on two cores a worker pays: judged in the reading thread, the sentences hold the
    interpreter lock the ingest's other stages need (``benchmarks/lid.py``: 1.70x faster
    with one worker, 1.95x with two, on the 2-core VM)."""
    given = os.environ.get("BITEXTDB_LID_WORKERS")
    if given is not None:
        if not given.strip().isdigit():
            raise InputError(f"BITEXTDB_LID_WORKERS must be a whole number, not {given!r}.")
        return int(given)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) - 1))


class ParallelCheck:
    """A :data:`LanguageCheck` (call it with a sentence) that can also judge a long
    stream of lines in worker processes (:meth:`verdicts`): py3langid's classifier is
    pure Python, about 24,000 sentences a second on one core, less than a GPU encodes."""

    def __init__(
        self, keep: LanguageCheck, wanted: frozenset[str], limit: float, workers: int
    ) -> None:
        self.keep = keep
        self.wanted = wanted
        self.limit = limit
        self.workers = workers

    def __call__(self, sentence: str) -> bool:
        return self.keep(sentence)

    def verdicts(self, lines: Iterable[T], text: Callable[[T], str]) -> Iterator[tuple[T, bool]]:
        """Each line with whether to keep its ``text(line)``, in order. The first
        :data:`POOL_AFTER` are judged here; then, with ``workers``, the rest in chunks of
        :data:`CHUNK` by that many processes, two chunks each in flight."""
        lines = iter(lines)
        for line in itertools.islice(lines, POOL_AFTER):
            yield line, self.keep(text(line))
        first = next(lines, None)
        if first is None:
            return
        lines = itertools.chain([first], lines)
        if self.workers < 1:
            for line in lines:
                yield line, self.keep(text(line))
            return
        context = multiprocessing.get_context("spawn")  # forking a threaded process is unsafe
        pending: collections.deque[tuple[list[T], Future[list[bool]]]] = collections.deque()
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_leave_interrupts_to_the_parent
        ) as pool:
            try:
                while chunk := list(itertools.islice(lines, CHUNK)):
                    texts = [text(line) for line in chunk]
                    pending.append((chunk, pool.submit(_judge, texts, self.wanted, self.limit)))
                    if len(pending) > 2 * self.workers:
                        done, future = pending.popleft()
                        yield from zip(done, future.result())
                while pending:
                    done, future = pending.popleft()
                    yield from zip(done, future.result())
            finally:  # stopped early: what has not started is not waited for
                for _, future in pending:
                    future.cancel()


def _leave_interrupts_to_the_parent() -> None:
    """In a worker process: Ctrl-C reaches the whole process group; the ingest stops its
    workers itself, so they print no traceback of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _judge(texts: list[str], wanted: frozenset[str], limit: float) -> list[bool]:
    """In a worker process: whether to keep each of ``texts``."""
    identifier = _identifier()
    verdicts = []
    for sentence in texts:
        found, probability = identifier.classify(sentence)
        verdicts.append(found in wanted or probability < limit)
    return verdicts


def language_check(
    lang: str,
    threshold: float = DEFAULT_LID_THRESHOLD,
    accept: Iterable[str] = (),
    workers: int | None = None,
) -> ParallelCheck:
    """What keeps the sentences of ``lang`` (its region or script aside: ``pt-BR`` is
    ``pt``) and drops those that py3langid puts in another language — one not in
    ``accept`` either — with a probability of at least ``threshold``.

    Short or ambiguous sentences, where no language wins that clearly, are kept.  The
    answers for the last :data:`REMEMBERED` distinct sentences are remembered (in this
    process). ``workers`` processes judge long inputs (:meth:`ParallelCheck.verdicts`;
    by default :func:`default_workers`). Raises :class:`InputError` for a threshold
    outside (0, 1] or a language py3langid lacks.
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

    count = default_workers() if workers is None else workers
    if count < 0:
        raise InputError(f"The --lid workers must be 0 or more, not {count}.")
    return ParallelCheck(keep, frozenset(wanted), limit, count)


def _code(lang: str, known: set[str]) -> str:
    code = lang.split("-")[0].split("_")[0].lower()
    code = _ALIASES.get(code, code)
    if code not in known:
        raise InputError(
            f"py3langid does not know {lang!r}, so --lid cannot check it; it knows: "
            f"{', '.join(sorted(known))}."
        )
    return code
