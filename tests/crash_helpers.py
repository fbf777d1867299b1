"""Helpers for the reliability tests: killable CLI runs, corpora and text-keyed snapshots.

Importing bitextdb costs seconds (torch), far longer than the work a crash test wants to
interrupt. So command sequences run in children forked from a *zygote*, a Python process
that imported ``bitextdb.cli`` once: each child is a real process (SIGKILL ends it with no
cleanup at all) and starts at once, so a kill after a random delay lands in the work, not in
the imports.
A child runs the click commands exactly as the console script does (``standalone_mode``),
writes each step's stdout and stderr to files, and appends markers of the phase it is in
(init, open, ingest, mine, close) to a file with unbuffered writes, which survive a kill.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


# -- the console script, for tests that want a real exec'd process ------------------------------
def bitextdb_command() -> list[str]:
    """How to run the ``bitextdb`` console script of this interpreter's environment.

    ``python -m bitextdb.cli`` does not work (``bitextdb.cli`` is a package without a
    ``__main__``), so use the script next to the interpreter.
    """
    script = Path(sys.executable).parent / "bitextdb"
    if script.is_file():
        return [str(script)]
    found = shutil.which("bitextdb")
    if found:
        return [found]
    return [sys.executable, "-c", "from bitextdb.cli import main; main()"]


# -- forked command sequences -------------------------------------------------------------------
class Zygote:
    """A Python process that imported ``bitextdb.cli`` once and forks a child per request.

    Requests and replies are JSON lines on its stdin and stdout: ``start`` forks a child that
    runs a command sequence and answers its pid; ``wait`` reaps a child and answers its exit
    code (negative: the signal that ended it).
    """

    _instance: Zygote | None = None

    def __init__(self) -> None:
        env = os.environ.copy()
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import tests.crash_helpers as h; h.zygote_main()"],
            cwd=str(Path(__file__).resolve().parents[1]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self._call({"op": "ping"}) == {"ok": True}

    @classmethod
    def get(cls) -> Zygote:
        if cls._instance is None or cls._instance.proc.poll() is not None:
            cls._instance = cls()
            atexit.register(cls._instance.close)
        return cls._instance

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the zygote died (exit {self.proc.wait()})")
        return dict(json.loads(line))

    def start(self, steps: list[list[str]], env: dict[str, str], workdir: Path) -> int:
        reply = self._call({"op": "start", "steps": steps, "env": env, "workdir": str(workdir)})
        return int(reply["pid"])

    def wait(self, pid: int) -> int:
        return int(self._call({"op": "wait", "pid": pid})["code"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def zygote_main() -> None:
    """The zygote's loop (see :class:`Zygote`)."""
    # the expensive imports, done once: the command line, and the miner with torch, which
    # the command line leaves to the commands that mine (a child that imported torch itself
    # would take seconds longer to reach the point a test times)
    import bitextdb.cli
    import bitextdb.miner  # noqa: F401

    def reply(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "ping":
            reply({"ok": True})
        elif op == "start":
            pid = os.fork()
            if pid == 0:  # the child: never returns into this loop
                code = 98
                try:
                    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                    run_steps(request["steps"], request["env"], request["workdir"])
                    code = 0
                finally:
                    os._exit(code)
            reply({"pid": pid})
        elif op == "wait":
            _, status = os.waitpid(request["pid"], 0)
            reply({"code": os.waitstatus_to_exitcode(status)})


@dataclass
class Step:
    """One command of a sequence as it ran (``code`` None: it never finished)."""

    args: list[str]
    code: int | None
    out: str
    err: str


class Child:
    """A command sequence running (or run) in a forked child; outputs live in ``workdir``."""

    def __init__(self, steps: Sequence[Sequence[str]], env: dict[str, str], workdir: Path):
        self.steps = [list(s) for s in steps]
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in self.workdir.iterdir():
            old.unlink()
        self.zygote = Zygote.get()
        self.exitcode: int | None = None
        self.pid = self.zygote.start(self.steps, dict(env), self.workdir)
        self.started = time.perf_counter()

    def wait(self, timeout: float = 300.0) -> float:
        """Wait for the child; seconds since it started."""
        deadline = time.monotonic() + timeout
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - self.started
        if _alive(self.pid):
            self.kill()
            raise AssertionError(f"the command sequence {self.steps} hung for {timeout} s")
        self.exitcode = self.zygote.wait(self.pid)
        return elapsed

    def kill(self) -> bool:
        """SIGKILL the child; True when it was still running (the kill landed)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.exitcode = self.zygote.wait(self.pid)
        return self.exitcode == -signal.SIGKILL

    def results(self) -> list[Step]:
        done: dict[int, int] = {}
        for line in self.markers():
            step, phase, _ = line.split()
            if phase.startswith("exit:"):
                done[int(step)] = int(phase[5:])
        out = []
        for i, args in enumerate(self.steps):
            stdout, stderr = self.workdir / f"{i}.out", self.workdir / f"{i}.err"
            if not stdout.exists():
                break
            out.append(
                Step(
                    args,
                    done.get(i),
                    stdout.read_text(errors="replace"),
                    stderr.read_text(errors="replace"),
                )
            )
        return out

    def markers(self) -> list[str]:
        path = self.workdir / "phase"
        return path.read_text().splitlines() if path.exists() else []

    def phase(self) -> tuple[int, str]:
        """Where the child was when it stopped: the step and the phase of the last marker."""
        lines = self.markers()
        if not lines:
            return -1, "fork"
        step, phase, _ = lines[-1].split()
        return int(step), phase

    def reach(self, step: int, phase: str, timeout: float = 120.0) -> bool:
        """Wait until the child writes the marker ``(step, phase)``; False if it ended first."""
        deadline = time.monotonic() + timeout
        wanted = f"{step} {phase} "
        while time.monotonic() < deadline:
            if any(m.startswith(wanted) for m in self.markers()):
                return True
            if not _alive(self.pid):
                return False
            time.sleep(0.001)
        raise AssertionError(f"the child never reached {step} {phase}")

    def timeline(self, absolute: bool = False) -> list[tuple[int, str, float]]:
        """``(step, phase, seconds since the child started)`` of every marker.

        With ``absolute``, the time is ``time.time()`` when the marker was written.
        """
        marks = [(int(a), b, float(c)) for a, b, c in (m.split() for m in self.markers())]
        if absolute or not marks:
            return marks
        return [(step, phase, t - marks[0][2]) for step, phase, t in marks]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for the zygote to reap it counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run(steps: Sequence[Sequence[str]], env: dict[str, str], workdir: Path) -> list[Step]:
    """Run a command sequence to its end; its steps."""
    child = Child(steps, env, workdir)
    child.wait()
    assert child.exitcode == 0, f"the child died with {child.exitcode}"
    return child.results()


def run_steps(steps: list[list[str]], env: dict[str, str], workdir: str) -> None:
    """In the child: run CLI commands one after the other, as the console script would.

    Every step runs, whatever the exit code of the one before (a rerun wants them all).
    """
    for name in [n for n in os.environ if n.startswith("BITEXTDB_")]:
        del os.environ[name]
    os.environ.update(env)
    marker = os.open(os.path.join(workdir, "phase"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    current = [0]

    def mark(text: str) -> None:
        os.write(marker, f"{current[0]} {text} {time.time():.4f}\n".encode())

    _install_markers(mark)
    from bitextdb.cli import cli

    for i, args in enumerate(steps):
        current[0] = i
        sys.stdout.flush()
        sys.stderr.flush()
        with (
            open(os.path.join(workdir, f"{i}.out"), "wb") as out,
            open(os.path.join(workdir, f"{i}.err"), "wb") as err,
        ):
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            mark("start")
            code = 0
            try:
                if args[0] == "@call":  # a helper of this module, e.g. one holding a lock
                    globals()[args[1]](**json.loads(args[2]))
                else:
                    cli.main(args, prog_name="bitextdb", standalone_mode=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 99
            sys.stdout.flush()
            sys.stderr.flush()
        mark(f"exit:{code}")


def _install_markers(mark: Any) -> None:
    """Wrap the entry points of each phase so the child says where it is (child only)."""
    from bitextdb import api, ingest, miner
    from bitextdb.vectors import edge

    def wrap(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(phase)
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    wrap(api, "init", "init")
    wrap(api, "open", "open")
    wrap(api.BitextDB, "mine", "mine")
    wrap(api.BitextDB, "close", "close")
    wrap(ingest.Ingestor, "ingest_lines", "ingest")
    wrap(miner.Miner, "mine", "mine-pairs")
    wrap(miner.Miner, "forget", "forget")
    wrap(miner.Miner, "_refresh", "refresh")
    wrap(edge.EdgeIndex, "delete", "delete-vectors")


def call(helper: str, /, **kwargs: Any) -> list[str]:
    """A step that calls ``helper`` (a function of this module) in the child with ``kwargs``."""
    return ["@call", helper, json.dumps(kwargs)]


def wait_for(path: str | Path, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists (a start signal between processes)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def hold_home(home: str, seconds: float, ready: str) -> None:
    """Open the database at ``home`` (taking its writer lock) and keep it ``seconds``."""
    import bitextdb

    db = bitextdb.open(home)
    try:
        Path(ready).write_text(str(os.getpid()))
        time.sleep(seconds)
    finally:
        db.close()
        Path(ready + ".released").write_text(repr(time.time()))


def hold_advisory_lock(
    url: str, name: str, seconds: float, ready: str, go: str, entered: str, peer: str, out: str
) -> None:
    """Take ``Database(url).advisory_lock(name)`` once ``go`` exists and hold it.

    Held until the ``peer`` process says it entered its lock too, or for ``seconds`` at
    most; ``out`` gets the (entered, left) times.
    """
    from bitextdb.db import Database

    db = Database(url)
    db.ping()
    Path(ready).touch()
    wait_for(go)
    with db.advisory_lock(name):
        started = time.time()
        Path(entered).touch()
        while time.time() < started + seconds and not os.path.exists(peer):
            time.sleep(0.005)
        left = time.time()
    db.dispose()
    Path(out).write_text(json.dumps([started, left]))


def add_sentences_at_once(url: str, texts: list[str], ready: str, go: str, out: str) -> None:
    """``corpus.add_sentences`` of ``texts`` (in this order) once ``go`` exists; the ids."""
    from bitextdb.db import Database, corpus
    from bitextdb.readers import text_hash

    db = Database(url)
    db.ping()
    fresh = {text_hash(t): t for t in texts}
    Path(ready).touch()
    wait_for(go)
    with db.session() as s:
        ids = corpus.add_sentences(s, "en", fresh)
    db.dispose()
    Path(out).write_text(json.dumps({fresh[h]: i for h, i in ids.items()}))


# -- corpora ------------------------------------------------------------------------------------
def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_corpus(path: Path, lines: Sequence[str], vectors: np.ndarray) -> tuple[Path, Path]:
    """``path`` (one sentence a line) and the line-aligned ``path.npy``."""
    assert len(lines) == len(vectors)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    npy = path.with_suffix(".npy")
    np.save(npy, np.asarray(vectors, dtype=np.float32))
    return path, npy


# -- PostgreSQL schemas -------------------------------------------------------------------------
@contextlib.contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A fresh schema in the PostgreSQL database at ``base`` (a URL), dropped afterwards."""
    import sqlalchemy as sa

    base = base.split("?options=")[0].split("&options=")[0]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- what a database holds, keyed by text -------------------------------------------------------
@dataclass
class Snapshot:
    """Everything mined, with every sentence id replaced by its (lang, text)."""

    sentences: dict[int, tuple[str, str]]
    unindexed: int
    occurrences: set[tuple[str, int, str, str]]
    knn: dict[tuple[str, str, str], tuple[Any, ...]]
    lists: dict[tuple[str, str, str], list[tuple[str, float]]]
    pairs: dict[tuple[str, str, str, str], tuple[Any, ...]]
    #: withdrawal records as (src lang, src text, tgt lang, tgt text, reason), counted; a
    #: history rather than a state, so :func:`differences` leaves it out
    withdrawn: collections.Counter[tuple[str, str, str, str, str]]


def snapshot(url: str) -> Snapshot:
    """Read the SQL side of a database (read-only, no lock needed)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            sent = {
                int(i): (lang, text)
                for i, lang, text in conn.execute(sa.text("SELECT id, lang, text FROM sentences"))
            }
            unindexed = conn.execute(
                sa.text("SELECT count(*) FROM sentences WHERE NOT indexed")
            ).scalar_one()
            occ = {
                (name, int(pos), *sent[int(sid)])
                for name, pos, sid in conn.execute(
                    sa.text(
                        "SELECT s.name, o.position, o.sentence_id FROM occurrences o "
                        "JOIN sources s ON s.id = o.source_id"
                    )
                )
            }

            def t(i: Any) -> str | None:
                return None if i is None else sent[int(i)][1]

            knn = {
                (*sent[int(sid)], other): (size, r, kth, t(best), best_cos, margin, bool(dirty))
                for sid, other, size, r, kth, best, best_cos, margin, dirty in conn.execute(
                    sa.text(
                        "SELECT sentence_id, other_lang, size, r, kth_cos, best_id, best_cos, "
                        "best_margin, dirty FROM knn"
                    )
                )
            }
            lists: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
            for sid, other, _rank, nid, cos in conn.execute(
                sa.text(
                    "SELECT sentence_id, other_lang, rank, neighbour_id, cosine FROM neighbours "
                    "ORDER BY sentence_id, other_lang, rank"
                )
            ):
                lists.setdefault((*sent[int(sid)], other), []).append((t(nid) or "", cos))
            pairs = {
                (sl, t(src) or "", tl, t(tgt) or ""): (
                    bool(acc),
                    bool(fw),
                    bool(bw),
                    margin,
                    cos,
                    src_r,
                    tgt_r,
                )
                for src, tgt, sl, tl, cos, margin, src_r, tgt_r, fw, bw, acc in conn.execute(
                    sa.text(
                        "SELECT src_id, tgt_id, src_lang, tgt_lang, cosine, margin, src_r, "
                        "tgt_r, forward, backward, accepted FROM pairs"
                    )
                )
            }
            withdrawn = collections.Counter(
                tuple(row)
                for row in conn.execute(
                    sa.text(
                        "SELECT src_lang, src_text, tgt_lang, tgt_text, reason FROM withdrawn_pairs"
                    )
                )
            )
    finally:
        engine.dispose()
    return Snapshot(sent, int(unindexed), occ, knn, lists, pairs, withdrawn)


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return abs(a - b) <= tol
    return bool(a == b)


def differences(got: Snapshot, want: Snapshot, tol: float = 1e-6) -> list[str]:
    """What differs between two snapshots, compared by text (ids may differ); [] when equal."""
    out: list[str] = []
    got_texts = sorted(got.sentences.values())
    want_texts = sorted(want.sentences.values())
    if got_texts != want_texts:
        out.append(
            f"sentences: {len(got_texts)} vs {len(want_texts)}; missing "
            f"{sorted(set(want_texts) - set(got_texts))[:5]}, extra "
            f"{sorted(set(got_texts) - set(want_texts))[:5]}"
        )
    if got.unindexed:
        out.append(f"{got.unindexed} sentences left unindexed")
    if got.occurrences != want.occurrences:
        out.append(
            f"occurrences: missing {sorted(want.occurrences - got.occurrences)[:3]}, "
            f"extra {sorted(got.occurrences - want.occurrences)[:3]}"
        )
    for name in ("knn", "lists", "pairs"):
        g, w = getattr(got, name), getattr(want, name)
        if set(g) != set(w):
            out.append(
                f"{name}: keys missing {sorted(set(w) - set(g))[:3]}, "
                f"extra {sorted(set(g) - set(w))[:3]}"
            )
        bad = []
        for key in sorted(set(g) & set(w)):
            a, b = g[key], w[key]
            if name == "lists":
                same = [x for x, _ in a] == [x for x, _ in b] and all(
                    _close(x, y, tol) for (_, x), (_, y) in zip(a, b)
                )
            else:
                same = len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
            if not same:
                bad.append(f"{key}: {a} != {b}")
        if bad:
            out.append(f"{name}: {len(bad)} differ, e.g. {bad[:3]}")
    return out


def check_json(step: Step) -> dict[str, Any]:
    """The report a ``check --json`` step printed."""
    return json.loads(step.out)
