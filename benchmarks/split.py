"""What splitting records into sentences costs (``ingest --split-sentences``). Run by hand:

    .venv/bin/python benchmarks/split.py                  # 200,000 sentences
    .venv/bin/python benchmarks/split.py --size 20000     # a quick check

Writes the same synthetic sentences (capitalised, with a full stop, an abbreviation now and
then) twice: one a line, and five to a line as paragraphs. Times, best of three:

1. reading alone (``read_lines``): the lines, and the paragraphs split into sentences;
2. the whole ingest of each (read, split, dedup, SQL, upsert into Qdrant Edge; no mining)
   with vectors that are ready at once (``InstantEncoder``, a stand-in for a GPU fast
   enough that the rest shows), into a fresh home each time.

Prints sentences per second and the ratio of split paragraphs to lines, and checks that
both stored the same sentences.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import instant_ingest, machine  # noqa: E402

import bitextdb  # noqa: E402
from bitextdb.readers import read_lines  # noqa: E402
from bitextdb.segment import sentence_splitter  # noqa: E402
from tests.models import LEXICON, build_tiny_bert  # noqa: E402

PER_PARAGRAPH = 5


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of 6 to 18 lexicon words, some with "e.g." or "Dr." inside."""
    rng = random.Random(seed)
    words = [w for triple in LEXICON for w in triple]
    out = []
    for i in range(n):
        body = [rng.choice(words) for _ in range(rng.randint(6, 18))]
        if i % 7 == 0:
            body.insert(rng.randint(1, len(body) - 1), rng.choice(["e.g.", "Dr.", "etc.,"]))
        out.append(f"{' '.join(body).capitalize()} {i}.")
    return out


def best_of(runs: int, work) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bitextdb.tune_allocator()  # as the command line does
    root = Path(tempfile.mkdtemp(prefix="bitextdb-split-"))
    try:
        texts = sentences(args.size)
        lines = root / "lines.txt"
        lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
        paragraphs = root / "paragraphs.txt"
        paragraphs.write_text(
            "\n".join(
                " ".join(texts[i : i + PER_PARAGRAPH]) for i in range(0, len(texts), PER_PARAGRAPH)
            )
            + "\n",
            encoding="utf-8",
        )
        split = sentence_splitter("en")
        got = [line.text for line in read_lines(paragraphs, split=split)]
        wrong = sum(a != b for a, b in zip(got, texts)) + abs(len(got) - len(texts))
        print(f"machine: {machine()}")
        print(
            f"{len(texts):,} sentences, {len(texts) // PER_PARAGRAPH:,} paragraphs of "
            f"{PER_PARAGRAPH}; the splitter gave back {len(got):,} sentences, "
            f"{wrong} differing from the originals"
        )

        def read_plain() -> None:
            for _ in read_lines(lines):
                pass

        def read_split() -> None:
            for _ in read_lines(paragraphs, split=split):
                pass

        plain = best_of(args.runs, read_plain)
        split_s = best_of(args.runs, read_split)
        print(
            f"read_lines, one a line:        {plain:6.2f} s = {len(texts) / plain:>9,.0f} "
            "sentences/s"
        )
        print(
            f"read_lines, paragraphs split:  {split_s:6.2f} s = {len(texts) / split_s:>9,.0f} "
            f"sentences/s ({split_s / plain:.2f}x the time)"
        )

        model = build_tiny_bert(root / "model", dim=args.dim)

        def ingest(path: Path, split_sentences: bool) -> tuple[float, int, float]:
            took, report = instant_ingest(
                root / "home", model, args.dim, path, "en", split_sentences=split_sentences
            )
            return took, report["new"], report["stage_seconds"]["read"]

        for label, path, flag in (
            ("one a line", lines, False),
            ("paragraphs split", paragraphs, True),
        ):
            runs = [ingest(path, flag) for _ in range(args.runs)]
            took, new, read = min(runs)
            if label == "one a line":
                base = took
            print(
                f"ingest, {label:17s} {took:6.2f} s = {new / took:>9,.0f} sentences/s, "
                f"{new:,} new, reading stage {read:.2f} s"
                + ("" if label == "one a line" else f" ({took / base:.2f}x the time)")
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
