"""Reliability: SIGKILL at random moments, unreachable or failing stores, concurrent writers."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import random
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import bitextdb
import bitextdb.ingest
from bitextdb.db import Database
from bitextdb.db import corpus as sql_corpus
from bitextdb.readers import text_hash
from tests import crash_helpers as ch
from tests.test_miner import assert_equals_reference

POSTGRES_ENV = "BITEXTDB_TEST_POSTGRES_URL"
DIM = 16
KILL_TRIALS = {"sqlite": 14, "postgres": 5}

# `mine` (and so the mining at the end of every `ingest`, and `check --repair`) first encodes
# the unindexed sentences of EVERY language; a bring-your-own-vectors database has no model,
# so after an interrupted `ingest --embeddings` of one language, the ingest of another one
# stores its sentences, then fails with this (exit 2) until the interrupted file is ingested
# again. See test_ingest_of_another_language_after_an_interrupted_byo_ingest.
BYO_RESUME_ERROR = "stored without vectors by an interrupted ingest"


@dataclass
class Corpus:
    """en.txt (3,000), de.txt (3,000 with repeats) and en2.txt = en.txt + 2,000 new lines."""

    root: Path
    files: list[tuple[str, Path, Path]]  # (lang, text file, line-aligned .npy)

    def texts(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = collections.defaultdict(set)
        for lang, path, _ in self.files:
            out[lang].update(path.read_text(encoding="utf-8").splitlines())
        return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    en_vecs = ch.unit_vectors(5000, DIM, 11)
    en = [f"English sentence number {i}." for i in range(5000)]
    de_vecs = ch.unit_vectors(3000, DIM, 12)
    de = [f"Deutscher Satz Nummer {i}." for i in range(3000)]
    for i in range(100, 3000, 97):  # repeated lines (with their vector): deduplicated
        de[i], de_vecs[i] = de[i - 50], de_vecs[i - 50]
    files = [
        ("en", *ch.write_corpus(root / "en.txt", en[:3000], en_vecs[:3000])),
        ("de", *ch.write_corpus(root / "de.txt", de, de_vecs)),
        # the same English file with 2,000 lines appended: re-ingest and append at once
        ("en", *ch.write_corpus(root / "en2.txt", en, en_vecs)),
    ]
    return Corpus(root, files)


def command_sequence(corpus: Corpus, db_url: str | None) -> list[list[str]]:
    init = ["-q", "init", "--model", "synthetic", "--dim", str(DIM)]
    if db_url:
        init = ["--db", db_url, *init]
    return [init] + [
        ["-q", "ingest", str(path), "--lang", lang, "--embeddings", str(npy)]
        for lang, path, npy in corpus.files
    ]


def child_env(home: Path) -> dict[str, str]:
    env = {"BITEXTDB_HOME": str(home)}
    env["BITEXTDB_QDRANT_RETRY_SECONDS"] = os.environ["BITEXTDB_QDRANT_RETRY_SECONDS"]
    return env


@contextlib.contextmanager
def fresh_database(backend: str, home: Path) -> Iterator[tuple[str | None, str]]:
    """(the --db flag for init or None, the URL to read the database at)."""
    if backend == "sqlite":
        yield None, f"sqlite:///{home / 'bitextdb.sqlite'}"
        return
    with ch.pg_schema(os.environ[POSTGRES_ENV]) as url:
        yield url, url


def lost_sentences(corpus: Corpus, snap: ch.Snapshot) -> int:
    stored: dict[str, set[str]] = collections.defaultdict(set)
    for lang, text in snap.sentences.values():
        stored[lang].add(text)
    return sum(len(texts - stored[lang]) for lang, texts in corpus.texts().items())


# -- 1. SIGKILL anywhere, rerun, same result --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_sigkill_at_random_moments_then_rerun_equals_the_uninterrupted_run(
    backend: str, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        request.getfixturevalue("postgres_url")  # skips (or fails in CI) without PostgreSQL
    rng = random.Random(f"kill-{backend}")

    # the uninterrupted run: the reference, and how long the sequence takes
    with fresh_database(backend, tmp_path / "ref") as (flag, url):
        steps = command_sequence(corpus, flag)
        child = ch.Child(steps, child_env(tmp_path / "ref"), tmp_path / "ref-run")
        duration = child.wait()
        for step in child.results():
            assert step.code == 0, (step.args, step.err)
        reference = ch.snapshot(url)
    timeline = child.timeline()
    assert reference.unindexed == 0 and lost_sentences(corpus, reference) == 0
    assert len(reference.pairs) > 1000 and len(reference.lists) == 5000 + 3000 - 30

    trials = KILL_TRIALS[backend]
    landed = 0
    phases: collections.Counter[str] = collections.Counter()
    byo_resume_failures = 0
    lost = 0
    for trial in range(trials):
        home = tmp_path / f"trial{trial}"
        with fresh_database(backend, home) as (flag, url):
            steps = command_sequence(corpus, flag)
            env = child_env(home)
            step, phase, delay = kill_target(timeline, trial, rng)
            child = ch.Child(steps, env, home.parent / f"run{trial}")
            if child.reach(step, phase):
                time.sleep(delay)
            if child.kill():
                landed += 1
                step, phase = child.phase()
                phases[f"{_step_name(steps, step)}:{phase}"] += 1

            rerun = ch.run([*steps, ["check", "--json"]], env, home.parent / f"rerun{trial}")
            *ran, check = rerun
            for step_result in ran:
                if step_result.code == 2 and BYO_RESUME_ERROR in step_result.err:
                    byo_resume_failures += 1  # the ingest that re-indexes them comes later
                    continue
                assert step_result.code == 0, (trial, step_result.args, step_result.err)
            assert check.code == 0, (trial, check.out, check.err)
            assert ch.check_json(check)["ok"] is True
            snap = ch.snapshot(url)
            lost += lost_sentences(corpus, snap)
            assert ch.differences(snap, reference) == [], f"trial {trial}, killed in {phase}"
    assert lost == 0
    assert landed >= trials // 2, "most kills must land before the sequence ends"
    print(
        f"\n[kill test, {backend}] {trials} trials, {landed} kills landed "
        f"(reference run {duration:.2f} s; phases {dict(sorted(phases.items()))}); "
        f"sentences lost: {lost}; rerun steps stopped by BYO resume: {byo_resume_failures}; "
        f"reference timeline: {[(s, p, round(t, 2)) for s, p, t in timeline]}"
    )


def _step_name(steps: list[list[str]], step: int) -> str:
    if step < 0:
        return "start"
    if "init" in steps[step]:
        return "init"
    return f"ingest {Path(steps[step][2]).name}"


#: phases of the reference timeline that the kills visit in turn
KILL_PHASES = (("ingest",), ("mine", "mine-pairs"), ("init", "open"), ("close",))


def kill_target(
    timeline: list[tuple[int, str, float]],
    trial: int,
    rng: random.Random,
    phases: tuple[tuple[str, ...], ...] = KILL_PHASES,
) -> tuple[int, str, float]:
    """Where to kill: a marker ``(step, phase)`` and a delay within that phase.

    Reading and storing a file takes a few per cent of the run and mining most of it, so
    uniform delays over the whole run would seldom land in ingest: trials take each kind of
    phase of ``KILL_PHASES`` in turn, pick one of its spans in the reference run (weighted by
    length) and a uniform moment within it. The delay counts from the moment the killed run
    itself reaches that marker, so a run slower or faster than the reference is still killed
    in the phase chosen (its own markers say where the kill landed).
    """
    wanted = phases[trial % len(phases)]
    spans = [
        (step, phase, end - start)
        for (step, phase, start), (_, _, end) in itertools.pairwise(timeline)
        if phase in wanted and end > start
    ]
    point = rng.uniform(0, sum(length for _, _, length in spans))
    for step, phase, length in spans:
        if point <= length:
            return step, phase, point
        point -= length
    return spans[-1][0], spans[-1][1], spans[-1][2]


# -- 1b. SIGKILL during a removal ----------------------------------------------------------------
#: phases of a removal: counting, searching lists again and the transaction, deleting the
#: vectors, recomputing the candidates
REMOVE_KILL_PHASES = (("open",), ("forget",), ("delete-vectors",), ("refresh",))
REMOVE_KILL_TRIALS = 4


@pytest.mark.slow
def test_sigkill_during_remove_then_finishing_equals_the_uninterrupted_removal(
    corpus: Corpus, tmp_path: Path
) -> None:
    """A removal killed anywhere, then run again (it says the source is gone when the kill
    came after its transaction) and ``check --repair``: the same database as a removal left
    alone, and ``check`` is clean."""
    import shutil

    rng = random.Random("kill-remove")
    base = tmp_path / "base"
    for step in ch.run(command_sequence(corpus, None), child_env(base), tmp_path / "base-run"):
        assert step.code == 0, (step.args, step.err)
    en2 = next(path for _, path, _ in corpus.files if path.name == "en2.txt")
    remove = ["-q", "remove", "--lang", "en", "--source", str(en2)]

    def database(home: Path) -> str:
        return f"sqlite:///{home / 'bitextdb.sqlite'}"

    shutil.copytree(base, tmp_path / "ref")
    child = ch.Child([remove], child_env(tmp_path / "ref"), tmp_path / "ref-run")
    child.wait()
    (done,) = child.results()
    assert done.code == 0, done.err
    reference = ch.snapshot(database(tmp_path / "ref"))
    before = ch.snapshot(database(base))
    assert len(reference.sentences) == len(before.sentences) - 2000
    assert ch.differences(reference, before), "the removal changed nothing"
    reasons = {key[-1] for key in reference.withdrawn - before.withdrawn}
    assert reasons == {"removed", "displaced"}, reasons
    timeline = child.timeline()

    landed = 0
    phases: collections.Counter[str] = collections.Counter()
    for trial in range(REMOVE_KILL_TRIALS):
        home = tmp_path / f"trial{trial}"
        shutil.copytree(base, home)
        step, phase, delay = kill_target(timeline, trial, rng, REMOVE_KILL_PHASES)
        child = ch.Child([remove], child_env(home), tmp_path / f"run{trial}")
        if child.reach(step, phase):
            time.sleep(delay)
        if child.kill():
            landed += 1
            phases[child.phase()[1]] += 1
        again, repair, check = ch.run(
            [remove, ["-q", "check", "--repair"], ["check", "--json"]],
            child_env(home),
            tmp_path / f"rerun{trial}",
        )
        assert again.code == 0 or (again.code == 2 and "No source" in again.err), again.err
        assert repair.code == 0, (trial, repair.out, repair.err)
        assert check.code == 0 and ch.check_json(check)["ok"] is True, (trial, check.out)
        got = ch.snapshot(database(home))
        assert ch.differences(got, reference) == [], f"trial {trial}, killed in {phase}"
        # the pairs it withdrew are recorded as a removal left alone records them
        assert got.withdrawn == reference.withdrawn, f"trial {trial}, killed in {phase}"
    assert landed >= REMOVE_KILL_TRIALS // 2, "most kills must land before the removal ends"
    print(f"\n[kill test, remove] {REMOVE_KILL_TRIALS} trials, {landed} landed: {dict(phases)}")


# -- 2. stores that are not there, or fail --------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_one_clean_error(stderr: str, code: int, expected_code: int, *words: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert code == expected_code, stderr
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_unreachable_qdrant_fails_init_and_ingest_with_exit_3(home: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    # a real exec'd console script, with the environment this test sees
    assert os.environ["BITEXTDB_QDRANT_RETRY_SECONDS"] == "2"
    started = time.monotonic()
    proc = subprocess.run(
        [*ch.bitextdb_command(), "--qdrant", url, "init", "--model", "synthetic", "--dim", "16"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    elapsed = time.monotonic() - started
    assert_one_clean_error(proc.stderr, proc.returncode, 3, "Qdrant", url)
    assert "after 2 s" in proc.stderr  # the child took its retry budget from our environment
    assert elapsed < 15, elapsed

    # ingest into an existing (embedded) home through the unreachable server: nothing stored
    en, npy = ch.write_corpus(
        tmp_path / "en.txt", ["a sentence", "another one"], ch.unit_vectors(2, DIM, 0)
    )
    env = child_env(home)
    init, ingest = ch.run(
        [
            ["-q", "init", "--model", "synthetic", "--dim", str(DIM)],
            ["--qdrant", url, "ingest", str(en), "--lang", "en", "--embeddings", str(npy)],
        ],
        env,
        tmp_path / "run",
    )
    assert init.code == 0, init.err
    assert_one_clean_error(ingest.err, ingest.code or 0, 3, "Qdrant", url)
    assert ch.snapshot(f"sqlite:///{home / 'bitextdb.sqlite'}").sentences == {}


REPLIES = {
    "close": None,
    "garbage": b"\x00\xff\x13garbage that is not HTTP\r\n\r\n",
    "http-html": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n"
    b"Connection: close\r\n\r\n<html></html>",
    "http-404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
}


@contextlib.contextmanager
def hostile_server(mode: str) -> Iterator[int]:
    """A TCP server on a free port that closes every connection at once or answers junk."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.1)
    stop = threading.Event()
    served = [0]

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            served[0] += 1
            with conn:
                reply = REPLIES[mode]
                if reply is not None:
                    conn.settimeout(1)
                    with contextlib.suppress(OSError):
                        conn.recv(65536)
                        conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        srv.close()
    assert served[0] >= 1, "the client never connected"


@pytest.mark.parametrize(
    "mode",
    [
        "close",
        "garbage",
        "http-html",
        "http-404",
    ],
)
def test_a_server_that_is_not_qdrant_fails_init_with_exit_3(
    mode: str, home: Path, tmp_path: Path
) -> None:
    with hostile_server(mode) as port:
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        (init,) = ch.run(
            [["--qdrant", url, "init", "--model", "synthetic", "--dim", str(DIM)]],
            child_env(home),
            tmp_path / "run",
        )
        elapsed = time.monotonic() - started
    assert_one_clean_error(init.err, init.code or 0, 3, "Qdrant", url)
    assert elapsed < 15, elapsed


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
@pytest.mark.parametrize("finish", ["rerun", "repair"])
def test_qdrant_failing_in_the_middle_of_an_ingest_leaves_nothing_half_done(
    finish: str, tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bitextdb.ingest, "BATCH", 50)
    home, qdrant = tmp_path / "home", f"local:{tmp_path / 'qdrant'}"
    bitextdb.init(home, qdrant=qdrant, model=str(tiny_bert)).close()
    db = bitextdb.open(home, qdrant=qdrant)
    try:
        de = [f"der hund und die katze {i}" for i in range(60)]
        en = [f"the dog and the cat number {i}" for i in range(140)]  # batches 50, 50, 40
        db.ingest_texts("de", de)

        real_upsert = db.index.client.upsert
        batches: list[int] = []  # the first point id of each batch upserted
        failed = [0]
        broken = [True]

        def flaky_upsert(collection: str, points: Any, **kwargs: Any) -> Any:
            first = points.ids[0]
            if first not in batches:
                batches.append(first)
            if broken[0] and len(batches) == 2 and first == batches[1]:
                failed[0] += 1
                raise httpx.ConnectError("connection refused (injected)")
            return real_upsert(collection, points=points, **kwargs)

        monkeypatch.setattr(db.index.client, "upsert", flaky_upsert)
        started = time.monotonic()
        with pytest.raises(bitextdb.StoreUnavailableError, match="Qdrant"):
            db.ingest_texts("en", en)
        assert failed[0] >= 2, "the failing upsert was retried"
        assert time.monotonic() - started < 10

        # batch 1 indexed; batch 2 (and batch 3, when the pipelined ingest had already
        # stored it) stored without vectors; nothing mined
        with db.db.session() as s:
            rows = s.execute(sa.text("SELECT text, indexed FROM sentences WHERE lang = 'en'")).all()
            mined = s.execute(sa.text("SELECT count(*) FROM knn")).scalar_one()
        unindexed = {t for t, ok in rows if not ok}
        assert {t for t, ok in rows if ok} == set(en[:50])
        assert set(en[50:100]) <= unindexed <= set(en[50:])
        assert mined == 0
        report = db.check()
        assert report.unindexed == len(unindexed)
        assert report.languages["en"] == {
            "sentences": len(rows),
            "vectors": 50,
            "missing_vectors": 0,
            "orphan_vectors": 0,
            "without_source": 0,
        }
        assert not (report.dangling_neighbours or report.dangling_pairs or report.dirty_candidates)

        broken[0] = False  # Qdrant is back
        if finish == "repair":
            repaired = db.check(repair=True)
            assert repaired.ok, repaired.as_dict()
            assert repaired.repaired["sentences_remined"] == 60 + len(rows)
            assert db.stats()["languages"]["en"]["indexed"] == len(rows)
        db.ingest_texts("en", en)
        assert db.check().ok
        assert db.stats()["languages"]["en"] == {"sentences": 140, "indexed": 140, "sources": 1}
        assert_equals_reference(db, "de", "en")
    finally:
        db.close()


def test_ingest_of_another_language_after_an_interrupted_byo_ingest(tmp_path: Path) -> None:
    """What a kill during ``ingest de.txt --embeddings de.npy`` leaves, then ``ingest en``."""
    db = bitextdb.init(tmp_path / "home", model="synthetic", dim=DIM)
    try:
        db.ingest_embeddings("de", [f"Satz {i}" for i in range(20)], ch.unit_vectors(20, DIM, 1))
        with db.db.session() as s:  # an interrupted run: stored, not yet indexed
            sql_corpus.add_sentences(s, "de", {text_hash(t): t for t in ("Satz 20", "Satz 21")})
        # the other language ingests and mines; the two German sentences without vectors
        # cannot be encoded here, so they wait (unindexed, never mined) and check says so
        db.ingest_embeddings(
            "en", [f"sentence {i}" for i in range(10)], ch.unit_vectors(10, DIM, 2)
        )
        assert db.stats()["languages"]["en"]["indexed"] == 10
        report = db.check()
        assert not report.ok
        assert report.unindexed == 2 and report.unmined == {"de-en": 0}
        assert_equals_reference(db, "de", "en")  # over what is indexed
        # ingesting the interrupted file again (with its vectors) finishes everything
        db.ingest_embeddings("de", ["Satz 20", "Satz 21"], ch.unit_vectors(2, DIM, 3))
        assert db.check().ok
        assert_equals_reference(db, "de", "en")
    finally:
        db.close()


# -- 3. concurrent writers ----------------------------------------------------------------------
def test_a_second_writer_on_an_embedded_home_is_busy_or_waits(home: Path, tmp_path: Path) -> None:
    en, npy = ch.write_corpus(
        tmp_path / "en.txt", [f"sentence {i}" for i in range(50)], ch.unit_vectors(50, DIM, 0)
    )
    env = child_env(home)
    ingest = ["ingest", str(en), "--lang", "en", "--embeddings", str(npy)]
    (init,) = ch.run(
        [["-q", "init", "--model", "synthetic", "--dim", str(DIM)]], env, tmp_path / "i"
    )
    assert init.code == 0, init.err

    ready = tmp_path / "ready"
    holder = ch.Child(
        [ch.call("hold_home", home=str(home), seconds=4.0, ready=str(ready))], env, tmp_path / "h"
    )
    ch.wait_for(ready)
    (busy,) = ch.run([["-q", *ingest]], env, tmp_path / "busy")
    assert_one_clean_error(busy.err, busy.code or 0, 4, "Another bitextdb process", "is writing")
    assert f"(pid {holder.pid})" in busy.err and "--wait" in busy.err
    assert not Path(f"{ready}.released").exists(), "the holder let go too early for this test"
    url = f"sqlite:///{home / 'bitextdb.sqlite'}"
    assert ch.snapshot(url).sentences == {}

    waiter = ch.Child([["--wait", "10", *ingest]], env, tmp_path / "wait")
    waiter.wait()
    holder.wait()
    (waited,) = waiter.results()
    assert waited.code == 0, waited.err
    assert "Waiting for another bitextdb writer" in waited.err
    released = float(Path(f"{ready}.released").read_text())
    ingested = [t for _, phase, t in waiter.timeline(absolute=True) if phase == "ingest"]
    assert ingested and ingested[0] >= released, "the waiter wrote only after the holder let go"
    assert sorted(t for _, t in ch.snapshot(url).sentences.values()) == sorted(
        f"sentence {i}" for i in range(50)
    )


@pytest.mark.postgres
def test_postgres_advisory_lock_serialises_one_pair_only(postgres_url: str, tmp_path: Path) -> None:
    """Two processes: the same lock name is never held twice at once, two different names are.

    Each process holds its lock until the other one has entered its own (at most 1 s for
    the same name, 10 s for different names), so an overlap is shown, not hoped for.
    """
    env = child_env(tmp_path / "home")
    cases = {
        "same": (["bitextdb-mine-de-en"] * 2, 1.0),
        "other": (["bitextdb-mine-de-en", "bitextdb-mine-en-fr"], 10.0),
    }
    for case, (names, seconds) in cases.items():
        work = tmp_path / case
        work.mkdir()
        kids = []
        for i, name in enumerate(names):
            step = ch.call(
                "hold_advisory_lock",
                url=postgres_url,
                name=name,
                seconds=seconds,
                ready=str(work / f"ready{i}"),
                go=str(work / "go"),
                entered=str(work / f"entered{i}"),
                peer=str(work / f"entered{1 - i}"),
                out=str(work / f"out{i}"),
            )
            kids.append(ch.Child([step], env, work / f"kid{i}"))
        for i in range(2):
            ch.wait_for(work / f"ready{i}")
        (work / "go").touch()
        for kid in kids:
            kid.wait(60)
            assert [s.code for s in kid.results()] == [0], kid.results()
        (a_in, a_out), (b_in, b_out) = sorted(
            json.loads((work / f"out{i}").read_text()) for i in range(2)
        )
        if case == "same":
            assert a_out - a_in >= 1.0, "the first holder waited for the second: not exclusive"
            assert a_out <= b_in, f"both held {names[0]} at once: {(a_in, a_out)} {(b_in, b_out)}"
        else:
            assert b_in < a_out, f"{names} did not overlap: {(a_in, a_out)} {(b_in, b_out)}"
            assert a_out - a_in < seconds


@pytest.mark.parametrize("order", ["same", "reversed"])
def test_concurrent_insert_of_the_same_sentences_stores_each_once(
    order: str, db_url: str, tmp_path: Path
) -> None:
    """Two processes add the same 10,000 sentences at once (in the same or opposite order).

    Unsorted, opposite orders deadlocked on PostgreSQL ('deadlock detected', exit 3) in most
    rounds; ``corpus.add_sentences`` now inserts in hash order. Whether the two transactions
    overlap is up to the scheduler, so the race runs three times (a fresh database each
    time) and every round must store each sentence once.
    """
    texts = [f"a shared sentence {i}" for i in range(10_000)]
    for attempt in range(3):
        url = db_url
        with contextlib.ExitStack() as stack:
            if db_url.startswith("postgresql"):
                url = stack.enter_context(ch.pg_schema(os.environ[POSTGRES_ENV]))
            else:
                url = f"sqlite:///{tmp_path / f'race{attempt}.sqlite'}"
            _race_add_sentences(url, texts, order, tmp_path / f"race{attempt}")


def _race_add_sentences(url: str, texts: list[str], order: str, work: Path) -> None:
    Database(url).upgrade()
    env = child_env(work / "home")
    go = work / "go"
    kids = []
    for i in range(2):
        step = ch.call(
            "add_sentences_at_once",
            url=url,
            texts=texts[::-1] if order == "reversed" and i else texts,
            ready=str(work / f"ready{i}"),
            go=str(go),
            out=str(work / f"out{i}"),
        )
        kids.append(ch.Child([step], env, work / f"kid{i}"))
    for i in range(2):
        ch.wait_for(work / f"ready{i}")
    go.touch()
    for kid in kids:
        kid.wait(120)
    for kid in kids:
        (step,) = kid.results()
        assert step.code == 0, step.err.strip().splitlines()[-1]
    first, second = (json.loads((work / f"out{i}").read_text()) for i in range(2))
    assert first == second and sorted(first) == sorted(texts)
    snap = ch.snapshot(url)
    assert sorted(t for _, t in snap.sentences.values()) == sorted(texts)


def test_repair_deletes_the_rows_hand_made_damage_leaves(
    db_url: str, home: Path, tmp_path: Path
) -> None:
    """Rows deleted by hand, past the foreign keys: kNN rows whose neighbour entries stay
    (the miner would insert those again and fail on their key), and on SQLite sentences
    whose occurrences and lists stay. ``check`` counts what is left over; ``--repair``
    deletes it and re-mines, and the pairs are a batch run's over what remains."""
    from tests.test_miner import assert_equals_reference, make_vectors

    with bitextdb.init(home, db=db_url, model="synthetic", dim=8, k=2) as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(12)], make_vectors(12, 8, 1, 0))
        db.ingest_embeddings("de", [f"de {i}" for i in range(12)], make_vectors(12, 8, 2, 0))
        with db.db.session() as s:
            s.execute(
                sa.text(
                    "DELETE FROM knn WHERE other_lang = 'en' AND sentence_id IN "
                    "(SELECT id FROM sentences WHERE lang = 'de' AND text IN ('de 1', 'de 2'))"
                )
            )
        report = db.check()
        assert report.stray_rows == 4 and report.unmined["de-en"] == 2 and not report.ok
        repaired = db.check(repair=True)
        assert repaired.ok and repaired.repaired["stray_rows_deleted"] == 4
        assert_equals_reference(db, "de", "en")
    if not db_url.startswith("sqlite"):
        return
    with sqlite3.connect(home / "bitextdb.sqlite") as conn:  # foreign keys off: no cascade
        gone = "(SELECT id FROM sentences WHERE text IN ('en 3', 'de 4'))"
        (accepted,) = conn.execute(
            f"SELECT count(*) FROM pairs WHERE accepted AND (src_id IN {gone} OR tgt_id IN {gone})"
        ).fetchone()
        conn.execute("DELETE FROM sentences WHERE text IN ('en 3', 'de 4')")
    with bitextdb.open(home) as db:
        report = db.check()
        assert report.stray_rows > 0 and not report.ok
        repaired = db.check(repair=True)
        assert repaired.ok
        # no withdrawal record can name them (a text is gone): the report says how many
        assert accepted > 0
        assert repaired.repaired.get("accepted_pairs_dropped_unrecorded", 0) == accepted
        assert_equals_reference(db, "de", "en")
        db.ingest_embeddings("en", ["en 3"], make_vectors(12, 8, 1, 0)[3:4])  # back again
        assert db.check().ok
        assert_equals_reference(db, "de", "en")
