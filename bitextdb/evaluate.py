"""Evaluate the mined pairs of a language pair against a gold standard (BUCC style).

As in sentence-transformers' ``bucc2018.py``: the accepted pairs (the greedy one-to-one
walk, no threshold) are visited by descending margin; at each threshold ``t``, precision
and recall are those of the accepted pairs with margin >= ``t``. The best F1 and its
threshold are reported, with a table of P/R/F1 at evenly spaced quantiles of the margins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from .db import export_sql
from .errors import ConfigError, InputError
from .export import PairSpec, resolve_pair
from .filters import PairFilter
from .outputs import OutputFile, output_file
from .readers import normalize, open_binary, text_hash

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .api import BitextDB


def read_gold(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The (src, tgt) fields of a two-column TSV gold file (blank lines are skipped).

    The file may be compressed (gzip, bzip2, xz) or ``-`` for standard input. A line
    without exactly two non-empty tab-separated fields raises :class:`InputError`.
    """
    pairs: list[tuple[str, str]] = []
    with open_binary(str(path)) as stream:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path} line {number} is not valid UTF-8.") from exc
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise InputError(
                    f"{path} line {number}: expected two tab-separated columns (src, tgt), "
                    f"got {len(fields)}."
                )
            if not fields[0].strip() or not fields[1].strip():
                raise InputError(
                    f"{path} line {number} has an empty column; expected two tab-separated "
                    "columns (src, tgt)."
                )
            pairs.append((fields[0].strip(), fields[1].strip()))
    if not pairs:
        raise InputError(f"{path} holds no gold pairs (src<TAB>tgt lines).")
    return pairs


def _resolve(s: Session, lang: str, fields: Sequence[str]) -> dict[str, frozenset[int]]:
    """``field -> sentence ids``: by external id first, else by normalised text."""
    by_ext = export_sql.ids_by_ext_id(s, lang, fields)
    rest = {f: text_hash(normalize(f)) for f in set(fields) if f not in by_ext}
    by_hash = export_sql.ids_by_hash(s, lang, list(rest.values()))
    out = {f: frozenset(ids) for f, ids in by_ext.items()}
    for f, h in rest.items():
        if h in by_hash:
            out[f] = frozenset([by_hash[h]])
    return out


def _scores(correct: np.ndarray, n: np.ndarray, gold: int) -> tuple[np.ndarray, ...]:
    n_safe = np.maximum(n, 1)
    precision = np.where(n > 0, correct / n_safe, 0.0)
    recall = correct / gold if gold else np.zeros(len(correct))
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(total)), where=total > 0)
    return precision, recall, f1


def evaluate(
    db: BitextDB,
    pair: str,
    gold: str | os.PathLike[str],
    *,
    plot: str | os.PathLike[str] | None = None,
    steps: int = 20,
    max_length_ratio: float | None = None,
    skip_identical: bool = False,
) -> dict[str, Any]:
    """Precision, recall and F1 of the accepted pairs of ``pair`` against ``gold``.

    ``gold`` is a TSV of (src, tgt) lines in the direction of ``pair`` ("en-de": English
    first). Each field is matched as an external id of that language (``--id-column`` at
    ingest; BUCC ids such as ``de-000001``), or else as sentence text (normalised). Lines
    that match no sentence on one side or both are counted in ``gold_unmatched`` (distinct
    lines); ``gold_pairs`` (the
    matched lines counted once) counts the distinct matched lines. Recall is over every
    distinct gold line, matched or not, as ``bucc2018.py`` counts it: a gold sentence
    that never got in (too long, skipped by ``--lid``, removed) is a pair missed.
    ``candidates`` is the number of candidate pairs, ``accepted`` the number walked.

    ``best`` holds the threshold (the margin of the pair where the best F1 is reached),
    precision, recall and F1; ``table`` those at ``steps`` evenly spaced quantiles of the
    accepted margins. ``plot`` writes a PNG (or, named so, a PDF or SVG) with the margin
    histograms of all candidates
    and of the gold pairs' candidates and the best threshold (needs the ``plot`` extra).

    ``max_length_ratio`` and ``skip_identical`` evaluate what an export with those filters
    writes (:class:`bitextdb.filters.PairFilter`): the accepted pairs they drop are left
    out of the walk and counted in ``filtered``.
    """
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
        raise InputError(f"--steps must be a whole number, at least 1, not {steps!r}.")
    steps = int(steps)
    keep = PairFilter(max_length_ratio, skip_identical)
    spec = resolve_pair(db, pair)
    lines = read_gold(gold)
    plot_file = None if plot is None else output_file(plot, "--plot", db.locations)
    plot_format = None if plot is None else _plot_format(plot)
    with db.db.session() as s:
        src_ids = _resolve(s, spec.src_lang, [a for a, _ in lines])
        tgt_ids = _resolve(s, spec.tgt_lang, [b for _, b in lines])
        acc = _oriented(spec, *export_sql.accepted_pairs(s, *spec.stored))
        cand = _oriented(spec, *export_sql.candidate_pairs(s, *spec.stored))
        filtered = 0
        if keep.active:
            before = len(acc[0])
            acc = _kept(s, acc, keep)
            filtered = before - len(acc[0])

    entries: dict[tuple[frozenset[int], frozenset[int]], int] = {}
    missing: set[tuple[str, str]] = set()  # gold lines naming a sentence not stored
    for a, b in lines:
        if a in src_ids and b in tgt_ids:
            entries.setdefault((src_ids[a], tgt_ids[b]), len(entries))
        else:
            missing.add((a, b))
    unmatched = len(missing)
    entry_of: dict[tuple[int, int], int] = {}
    for (xs, ys), number in entries.items():
        for x in xs:
            for y in ys:
                entry_of.setdefault((x, y), number)
    n_gold = len(entries)
    if not n_gold:
        raise InputError(
            f"None of the {len(lines)} gold pairs names a stored sentence on both sides: "
            f"are its columns {spec.src_lang} then {spec.tgt_lang}, as --pair {spec.name} says?"
        )

    src, tgt, margin = acc
    order = np.lexsort((tgt, src, -margin))
    src, tgt, margin = src[order], tgt[order], margin[order]
    credited: set[int] = set()
    hit = np.zeros(len(src), dtype=bool)
    for i, key in enumerate(zip(src.tolist(), tgt.tolist())):
        number = entry_of.get(key)
        if number is not None and number not in credited:
            credited.add(number)
            hit[i] = True
    cum = np.cumsum(hit)
    # a threshold cannot split pairs of equal margin: only the last of each run counts
    ends = np.flatnonzero(np.append(margin[1:] != margin[:-1], True)) if len(margin) else cum
    n_recall = n_gold + unmatched  # every gold pair: the unmatched are missed
    precision, recall, f1 = _scores(cum[ends], ends + 1, n_recall)
    best: dict[str, Any] = {"threshold": None, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    if len(ends) and f1.max() > 0:
        at = int(np.argmax(f1))  # the first (highest) threshold reaching it
        best = {
            "threshold": float(margin[ends[at]]),
            "precision": float(precision[at]),
            "recall": float(recall[at]),
            "f1": float(f1[at]),
        }

    table = []
    if len(margin):
        quantiles = np.quantile(margin, np.linspace(1.0, 0.0, steps), method="lower")
        thresholds = sorted({float(t) for t in quantiles}, reverse=True)
        counts = np.searchsorted(-margin, -np.array(thresholds), side="right")
        correct = np.where(counts > 0, cum[np.maximum(counts - 1, 0)], 0)
        p, r, f = _scores(correct, counts, n_recall)
        table = [
            {
                "threshold": t,
                "pairs": int(n),
                "correct": int(c),
                "precision": float(pi),
                "recall": float(ri),
                "f1": float(fi),
            }
            for t, n, c, pi, ri, fi in zip(thresholds, counts, correct, p, r, f)
        ]

    result: dict[str, Any] = {
        "pair": spec.name,
        "gold_lines": len(lines),
        "gold_pairs": n_gold,
        "gold_unmatched": unmatched,
        "candidates": len(cand[0]),
        "accepted": len(src),
        "filters": keep.as_dict(),
        "filtered": filtered,
        "correct": int(cum[-1]) if len(cum) else 0,
        "best": best,
        "table": table,
    }
    if plot_file is not None:
        in_gold = np.array(
            [key in entry_of for key in zip(cand[0].tolist(), cand[1].tolist())], dtype=bool
        )
        _plot(plot_file, str(plot_format), spec, cand[2], cand[2][in_gold], best)
        result["plot"] = str(plot)
    return result


def _kept(
    s: Session, pairs: tuple[np.ndarray, np.ndarray, np.ndarray], keep: PairFilter
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src, tgt, margin = pairs
    texts = export_sql.texts(s, np.concatenate([src, tgt]).tolist())
    mask = np.array(
        [keep.keep(texts[a], texts[b]) for a, b in zip(src.tolist(), tgt.tolist())], dtype=bool
    )
    return src[mask], tgt[mask], margin[mask]


def _oriented(
    spec: PairSpec, src: np.ndarray, tgt: np.ndarray, margin: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (tgt, src, margin) if spec.swap else (src, tgt, margin)


#: what ``--plot`` writes, by the file's extension (PNG without one)
PLOT_FORMATS = ("png", "pdf", "svg")


def _plot_format(path: str | os.PathLike[str]) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in PLOT_FORMATS:
        raise InputError(f"--plot writes .png, .pdf or .svg, not .{suffix}.")
    return suffix


def _plot(
    file: OutputFile,
    file_format: str,
    spec: PairSpec,
    margins: np.ndarray,
    gold_margins: np.ndarray,
    best: dict[str, Any],
) -> None:
    """Margin histograms of all candidates and the gold ones, with the best threshold."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib; install the plot extra: pip install 'bitextdb[plot]'."
        ) from exc
    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(margins, bins=50) if len(margins) else 10
    ax.hist(margins, bins=bins, alpha=0.5, label=f"all candidates ({len(margins)})")
    ax.hist(
        gold_margins, bins=bins, alpha=0.8, label=f"gold pairs' candidates ({len(gold_margins)})"
    )
    if best["threshold"] is not None:
        ax.axvline(
            best["threshold"],
            color="red",
            linestyle="--",
            label=f"best F1 {best['f1']:.3f} at margin {best['threshold']:.4f}",
        )
    ax.set_xlabel("margin")
    ax.set_ylabel("candidates")
    ax.set_title(f"{spec.name}: candidate margins")
    ax.legend()
    fig.tight_layout()
    try:
        if file.descriptor is None:
            fig.savefig(file.temporary(), format=file_format)
        else:
            with file.open_binary() as stream:
                fig.savefig(stream, format=file_format)
        file.install()
    finally:
        file.discard()
