"""Export-time filters for mined pairs: the cheap checks bitext is usually cleaned with.

Margin mining keeps some pairs that are not translations but look alike to the encoder:
a sentence copied untranslated into the other side of a web page (the same text twice),
or a short sentence matched with a long one that merely contains it. ``--skip-identical``
drops the first kind, ``--max-length-ratio`` the second. A pair's texts never change, so
whether a filter keeps a pair never changes either: a cursor export with a filter stays
exact as long as the cursor keeps its filter (see :func:`bitextdb.export.export_pairs`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class PairFilter:
    """Which exported pairs to keep.

    ``max_length_ratio``: drop a pair whose longer side has more than this many times the
    characters of the shorter one (at least 1). ``skip_identical``: drop a pair whose two
    sides are the same text, ignoring case.
    """

    max_length_ratio: float | None = None
    skip_identical: bool = False

    def __post_init__(self) -> None:
        ratio = self.max_length_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, Real)):
            raise InputError(f"--max-length-ratio must be a number, not {ratio!r}.")
        if ratio is not None and not ratio >= 1:  # `not >=` also refuses NaN
            raise InputError(f"--max-length-ratio must be at least 1, not {ratio:g}.")
        if ratio == math.inf:  # no limit; and JSON (a cursor's filters) has no infinity
            object.__setattr__(self, "max_length_ratio", None)

    @property
    def active(self) -> bool:
        """Whether this filter drops anything at all."""
        return self.max_length_ratio is not None or self.skip_identical

    def keep(self, src: str, tgt: str) -> bool:
        """Whether the pair ``(src, tgt)`` passes."""
        if self.skip_identical and src.casefold() == tgt.casefold():
            return False
        if self.max_length_ratio is not None:
            short, long = sorted((len(src), len(tgt)))
            if long > self.max_length_ratio * max(short, 1):
                return False
        return True

    def describe(self) -> str:
        """The filter as the command line's options (``none`` when inactive)."""
        parts = []
        if self.max_length_ratio is not None:
            parts.append(f"--max-length-ratio {self.max_length_ratio:g}")
        if self.skip_identical:
            parts.append("--skip-identical")
        return " ".join(parts) or "none"

    def as_dict(self) -> dict[str, Any]:
        """The settings, as stored with an export cursor and shown in summaries."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PairFilter:
        """The filter :meth:`as_dict` wrote (no filter for None)."""
        return cls(**(data or {}))
