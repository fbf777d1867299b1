"""The glibc arena cap that keeps a long run's heap from growing with the corpus."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bitextdb import allocator
from bitextdb.cli import cli

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")

# Eight threads allocate at once (each would get a heap arena of its own), then glibc's
# malloc_stats() lists the arenas on stderr.
PROBE = """
import ctypes, json, sys, threading
from bitextdb.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else {}
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    held = [bytearray(64_000) for _ in range(50)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(applied), flush=True)
ctypes.CDLL(None).malloc_stats()
"""


def probe(mode: str, **env: str) -> tuple[dict, int]:
    """What ``tune_allocator`` applied, and how many heap arenas the process ended with."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    arenas = sum(line.startswith("Arena ") for line in out.stderr.splitlines())
    return json.loads(out.stdout), arenas


@glibc_only
def test_tuned_process_keeps_two_arenas_however_many_threads_allocate() -> None:
    _, untuned = probe("default")
    applied, tuned = probe("tuned")
    assert untuned > allocator.ARENA_MAX  # glibc's default: an arena per allocating thread
    assert tuned == allocator.ARENA_MAX
    assert applied == {"MALLOC_ARENA_MAX": allocator.ARENA_MAX}


@glibc_only
def test_environment_setting_wins() -> None:
    applied, arenas = probe("tuned", MALLOC_ARENA_MAX="4")
    assert applied == {}
    assert arenas == 4


def test_command_line_tunes_the_allocator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[bool] = []
    monkeypatch.setattr("bitextdb.cli.tune_allocator", lambda: calls.append(True) or {})
    CliRunner().invoke(cli, ["-q", "--home", str(tmp_path / "home"), "stats"])
    assert calls == [True]
