"""glibc allocator settings that keep a long run's heap from growing with the corpus."""

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

# Frees an 8 MiB block (by default glibc then serves blocks up to that size from its heaps),
# then counts the separate mappings a held 2 MiB block takes: 1 when it is mapped on its own.
PROBE = """
import ctypes, json, sys
from bitextdb.allocator import tune_allocator
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
applied = tune_allocator() if sys.argv[1] == "tuned" else {}
big = bytearray(8 << 20)
del big
before = libc.mallinfo2().hblks
held = bytearray(2 << 20)
print(json.dumps({"applied": applied, "mapped": libc.mallinfo2().hblks - before}))
"""


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@glibc_only
def test_tuned_heap_maps_batch_sized_blocks_on_their_own() -> None:
    untuned = probe("default")
    tuned = probe("tuned")
    assert untuned["mapped"] == 0  # glibc's default: served from the heap after a larger free
    assert tuned["mapped"] == 1
    assert tuned["applied"] == {
        "MALLOC_ARENA_MAX": allocator.ARENA_MAX,
        "MALLOC_MMAP_THRESHOLD_": allocator.MMAP_THRESHOLD,
    }


@glibc_only
def test_environment_settings_win() -> None:
    tuned = probe("tuned", MALLOC_MMAP_THRESHOLD_="33554432")
    assert tuned["applied"] == {"MALLOC_ARENA_MAX": allocator.ARENA_MAX}
    assert tuned["mapped"] == 0  # the user's 32 MiB threshold, not ours


def test_command_line_tunes_the_allocator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[bool] = []
    monkeypatch.setattr("bitextdb.cli.tune_allocator", lambda: calls.append(True) or {})
    CliRunner().invoke(cli, ["-q", "--home", str(tmp_path / "home"), "stats"])
    assert calls == [True]
