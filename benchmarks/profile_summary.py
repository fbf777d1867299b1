"""Summarise a py-spy profile in raw (collapsed) form. Run by hand:

    python benchmarks/profile_summary.py profile.txt [--top 12]

``gpu.py --py-spy PATH --profile FILE`` samples one more run of the ingest (this process
and its children, on-CPU samples only, with ``--threads``). This prints, per process and
per thread, how many samples it took (at py-spy's rate, 250 a second there), then each
process's busiest functions: those the samples were in (self) and the bitextdb functions
the samples passed through (inclusive), which shows which process holds the ingest back.
"""

from __future__ import annotations

import argparse
import collections
import re

Counter = collections.Counter


def parse(path: str) -> list[tuple[str, str, list[str], int]]:
    """``(process, thread, frames, samples)`` for each line of a raw py-spy profile."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            # 'process PID:"command";...' once per process up the tree, the innermost last
            # (a command may hold ';' itself), then 'thread (TID): name', then the frames
            head, _sep, tail = stack.rpartition('";thread (')
            command = head.rsplit(':"', 1)[-1]
            thread, _, frames = tail.partition(";")
            name = re.sub(r"^\d+\):?\s*", "", thread) or "(thread without a name)"
            frames_list = frames.split(";") if frames else []
            rows.append((_process_name(command), name, frames_list, int(count)))
    return rows


def _process_name(command: str) -> str:
    if "edge_writer" in command:
        return "edge writer process"
    if "multiprocessing" in command:
        return "encoder process"
    return "ingesting process"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    rows = parse(args.profile)
    by_process: Counter[str] = Counter()
    by_thread: Counter[tuple[str, str]] = Counter()
    own: dict[str, Counter[str]] = collections.defaultdict(Counter)
    through: dict[str, Counter[str]] = collections.defaultdict(Counter)
    for process, thread, frames, count in rows:
        by_process[process] += count
        by_thread[(process, thread)] += count
        if frames:
            own[process][frames[-1]] += count
        for frame in set(frames):
            if "bitextdb/" in frame:
                through[process][frame] += count
    for process, count in by_process.most_common():
        print(f"{process}: {count} samples")
        for (owner, thread), n in by_thread.most_common():
            if owner == process:
                print(f"  {n:6} {thread}")
    for process, _ in by_process.most_common():
        print(f"\n{process}, samples in (self):")
        for frame, n in own[process].most_common(args.top):
            print(f"  {n:6} {frame}")
        print(f"{process}, samples through bitextdb's functions (inclusive):")
        for frame, n in through[process].most_common(args.top):
            print(f"  {n:6} {frame}")


if __name__ == "__main__":
    main()
