"""Write the GPU benchmark's corpus: real English sentences, one per line.

    .venv/bin/python benchmarks/gpu_corpus.py --out .gpu/sentences.txt [--n 60000]

No corpus can be downloaded on our machines, so the sentences come from the docstrings of
the Python packages installed here (the standard library, torch, transformers, ...): split
at sentence ends, kept when 60-400 characters long and mostly letters, deduplicated, in a
fixed order. About 32 tokens a sentence with a WordPiece vocabulary of the corpus' words.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node)
            if text:
                found.append(text)
    return found


def sentences(text: str) -> list[str]:
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        if ">>>" in paragraph or "::" in paragraph:  # examples and directives, not prose
            continue
        flat = " ".join(paragraph.split())
        found += [s for s in SENTENCE_END.split(flat) if usable(s)]
    return found


def usable(sentence: str) -> bool:
    if not 60 <= len(sentence) <= 400:
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters / len(sentence) > 0.9 and sentence[-1] in ".!?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=60_000)
    args = parser.parse_args()
    roots = sorted({Path(p) for p in sys.path if p and Path(p).is_dir()})
    seen: set[str] = set()
    kept: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for doc in docstrings(path):
                for sentence in sentences(doc):
                    if sentence not in seen:
                        seen.add(sentence)
                        kept.append(sentence)
            if len(kept) >= args.n:
                break
        if len(kept) >= args.n:
            break
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(kept[: args.n]) + "\n", encoding="utf-8")
    mean = sum(map(len, kept[: args.n])) / max(1, min(len(kept), args.n))
    print(f"{min(len(kept), args.n)} sentences, {mean:.0f} characters on average -> {out}")


if __name__ == "__main__":
    main()
