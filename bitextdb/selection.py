"""The greedy one-to-one selection, brought up to date where a few candidates changed.

The greedy walk (:func:`bitextdb.margin.greedy_one_to_one`) takes candidate pairs in the
order of the key (-margin, src, tgt) and accepts one when neither of its sentences is taken
yet. So a pair is accepted exactly when no pair before it in that order that shares its
source or its target is accepted: its fate depends only on the pairs it touches that come
before it.

After a mine changed a few candidates (new ones, new margins, deleted ones), only the pairs
touching a changed pair's sentences can change at first, and a pair whose fate changes can
change only the pairs touching it that come after it. :func:`reselect` decides those again
in the walk's order, with a heap, loading the pairs of each sentence it meets from the
database as it goes; every other pair keeps its stored fate. The result equals a walk over
everything (`tests/test_selection.py` checks it against :func:`greedy_one_to_one` on random
changes). When the changes run on past ``limit`` pairs, it gives up and the caller walks
over everything, which is then cheaper.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

Key = tuple[int, int]
Row = tuple[int, int, float, bool]
Loader = Callable[[list[int], list[int]], Iterable[Row]]


class _Pairs:
    """The pairs loaded so far, indexed by source and by target sentence."""

    def __init__(self, load: Loader) -> None:
        self._load = load
        self.margin: dict[Key, float] = {}
        self.accepted: dict[Key, bool] = {}
        self.by_src: dict[int, list[Key]] = {}
        self.by_tgt: dict[int, list[Key]] = {}

    def ensure(self, srcs: Iterable[int], tgts: Iterable[int]) -> None:
        """Load every pair of these source and target sentences not loaded yet."""
        new_src = sorted({s for s in srcs if s not in self.by_src})
        new_tgt = sorted({t for t in tgts if t not in self.by_tgt})
        if not new_src and not new_tgt:
            return
        for s in new_src:
            self.by_src[s] = []
        for t in new_tgt:
            self.by_tgt[t] = []
        wanted_src, wanted_tgt = set(new_src), set(new_tgt)
        seen: set[Key] = set()
        for src, tgt, margin, accepted in self._load(new_src, new_tgt):
            key = (int(src), int(tgt))
            if key in seen:
                continue
            seen.add(key)
            if key not in self.margin:  # one loaded before keeps its flag, decided or not
                self.margin[key] = float(margin)
                self.accepted[key] = bool(accepted)
            if key[0] in wanted_src:
                self.by_src[key[0]].append(key)
            if key[1] in wanted_tgt:
                self.by_tgt[key[1]].append(key)

    def order(self, key: Key) -> tuple[float, int, int]:
        return (-self.margin[key], key[0], key[1])

    def touching(self, key: Key) -> list[Key]:
        """The pairs sharing this pair's source or target (itself excluded)."""
        both = self.by_src[key[0]] + self.by_tgt[key[1]]
        return [other for other in both if other != key]


def reselect(changed: Iterable[Key], load: Loader, limit: int) -> dict[Key, bool] | None:
    """The pairs whose accepted flag must change, with their new flag, after ``changed``.

    ``changed`` names pairs inserted, deleted or given a new margin since the stored flags
    were a greedy walk's; ``load(srcs, tgts)`` gives (src, tgt, margin, accepted) for every
    stored pair whose source is in ``srcs`` or whose target is in ``tgts``, as stored now.
    None when more than ``limit`` pairs would have to be decided again.
    """
    pairs = _Pairs(load)
    changed = list(changed)
    pairs.ensure([s for s, _ in changed], [t for _, t in changed])
    start = {key for s, t in changed for key in pairs.by_src[s] + pairs.by_tgt[t]}
    pairs.ensure([s for s, _ in start], [t for _, t in start])
    heap = [(pairs.order(key), key) for key in start]
    heapq.heapify(heap)
    queued = set(start)
    flips: dict[Key, bool] = {}
    decided = 0
    while heap:
        order, key = heapq.heappop(heap)
        decided += 1
        if decided > limit:
            return None
        touching = pairs.touching(key)
        accept = not any(pairs.accepted[other] for other in touching if pairs.order(other) < order)
        if accept == pairs.accepted[key]:
            continue
        pairs.accepted[key] = accept
        flips[key] = accept
        later = [other for other in touching if pairs.order(other) > order]
        pairs.ensure([s for s, _ in later], [t for _, t in later])
        for other in later:
            if other not in queued:
                queued.add(other)
                heapq.heappush(heap, (pairs.order(other), other))
    return flips
