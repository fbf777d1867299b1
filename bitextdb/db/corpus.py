"""SQL side of sources, sentences and occurrences (used by ``bitextdb.ingest``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Integer, bindparam, delete, func, select, tuple_, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from ..errors import InputError
from ..readers import describe_reading
from .bulk import db_value, execute_many, execute_many_returning, select_in
from .graph import chunks, withdraw_sentences
from .tables import DisplacedSentence, Occurrence, Sentence, Setting, Source, utcnow
from .upsert import insert_for

SENT = Sentence.__table__
OCC = Occurrence.__table__
SRC = Source.__table__
SETTINGS = Setting.__table__
DISPLACED = DisplacedSentence.__table__
#: the ``settings`` key of the highest sentence id a removal deleted: SQLite gives a new row
#: the largest id so far plus one, which would hand a removed sentence's id to a new one
ID_FLOOR = "sentence_id_floor"


def source_id(
    s: Session, lang: str, name: str, path: str | None, *, split_sentences: bool = False
) -> int:
    """The id of a source, created on first use.

    Raises :class:`InputError` when the source was stored with records split into
    sentences and now comes unsplit, or the other way round: its positions would then
    mean two things.
    """
    query = select(SRC.c.id, SRC.c.split_sentences).where(SRC.c.lang == lang, SRC.c.name == name)
    found = s.execute(query).first()
    if found is None:
        s.execute(
            insert_for(s, SRC)
            .values(
                lang=lang,
                name=name,
                path=path,
                records=0,
                split_sentences=split_sentences,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        found = s.execute(query).one()
    if bool(found.split_sentences) != split_sentences:
        was = "with" if found.split_sentences else "without"
        raise InputError(
            f"The {lang} source {name!r} was ingested {was} --split-sentences; ingest it the "
            "same way, under another --source, or remove it first."
        )
    return int(found.id)


def check_reading(
    s: Session, sid: int, name: str, read: dict[str, object], *, adopt: bool = True
) -> None:
    """Refuse to read a file's source another way than it was read (another format,
    column or field): the lines the first reading gave would all leave it. A source read
    before readings were kept takes this one (unless ``adopt`` is false: a dry run)."""
    stored = s.execute(select(SRC.c.reader).where(SRC.c.id == sid)).scalar()
    if stored is None:
        if adopt:
            s.execute(update(SRC).where(SRC.c.id == sid).values(reader=read))
        return
    if dict(stored) != read:
        raise InputError(
            f"{name} was read with {describe_reading(dict(stored))}, not "
            f"{describe_reading(read)}: read it the same way (give those options), or remove "
            "its source first (`bitextdb remove`) to read it otherwise. Nothing was changed."
        )


def existing_source(s: Session, lang: str, name: str) -> int | None:
    """The id of a source, or None when there is none of that name (nothing created)."""
    query = select(SRC.c.id).where(SRC.c.lang == lang, SRC.c.name == name)
    found = s.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


def reserve_positions(s: Session, sid: int, count: int) -> int:
    """Claim ``count`` positions after the source's last record for texts appended to it;
    returns the first.  One statement, so concurrent appenders get disjoint ranges."""
    ends = s.execute(
        update(SRC)
        .where(SRC.c.id == sid)
        .values(records=SRC.c.records + count, updated_at=utcnow())
        .returning(SRC.c.records)
    ).scalar_one()
    return int(ends) - count


def release_positions(s: Session, sid: int, first: int, count: int) -> None:
    """Give back the positions :func:`reserve_positions` claimed for texts of which none
    was stored (an ingest that failed at once), and drop the source if that leaves it
    empty; positions claimed after them by another call are left alone."""
    used = select(OCC.c.position).where(OCC.c.source_id == sid, OCC.c.position >= first)
    if s.execute(used.limit(1)).first() is not None:
        return
    s.execute(
        update(SRC).where(SRC.c.id == sid, SRC.c.records == first + count).values(records=first)
    )
    records = s.execute(select(SRC.c.records).where(SRC.c.id == sid)).scalar_one_or_none()
    if records == 0 and not holds_anything(s, sid):
        s.execute(delete(SRC).where(SRC.c.id == sid))


def source_path(s: Session, sid: int) -> str | None:
    """The file a source was last ingested from (None for texts and standard input)."""
    return s.execute(select(SRC.c.path).where(SRC.c.id == sid)).scalar_one()


def holds_anything(s: Session, sid: int) -> bool:
    """Whether the source has any occurrence."""
    query = select(OCC.c.position).where(OCC.c.source_id == sid).limit(1)
    return s.execute(query).first() is not None


def touch_source(s: Session, sid: int, records: int, *, exact: bool = False) -> None:
    """Record that the source has (at least, unless ``exact``) ``records`` records."""
    if exact:
        count = records
    elif s.get_bind().dialect.name == "sqlite":
        count = func.max(SRC.c.records, records)
    else:
        count = func.greatest(SRC.c.records, records)
    s.execute(update(SRC).where(SRC.c.id == sid).values(records=count, updated_at=utcnow()))


def known(s: Session, lang: str, hashes: Sequence[str]) -> dict[str, tuple[int, bool]]:
    """``hash -> (sentence id, indexed)`` for the hashes already stored."""
    out: dict[str, tuple[int, bool]] = {}
    for chunk in _str_chunks(hashes):
        for sid, h, indexed in select_in(
            s,
            "SELECT id, text_hash, indexed FROM sentences WHERE lang = {p} AND text_hash IN ({in})",
            chunk,
            before=[lang],
        ):
            out[h] = (int(sid), bool(indexed))
    return out


def add_sentences(s: Session, lang: str, texts: dict[str, str]) -> dict[str, int]:
    """Insert ``hash -> text`` sentences (existing ones are kept); ``hash -> id``."""
    if not texts:
        return {}
    now = db_value(s, SENT.c.created_at, utcnow())
    no = db_value(s, SENT.c.indexed, False)
    # one order for every writer: concurrent inserts of the same sentences then queue on
    # the unique index instead of deadlocking (PostgreSQL)
    ordered = sorted(texts)
    insert = insert_for(s, SENT).on_conflict_do_nothing()
    keys = ["lang", "text", "text_hash", "indexed", "created_at"]
    rows: list[tuple] = [(lang, texts[h], h, no, now) for h in ordered]
    dialect = s.get_bind().dialect
    if dialect.name == "sqlite":
        first = _first_free_id(s)
        if first is not None:  # the newest sentences were removed: start past their ids
            keys.insert(0, "id")
            rows = [(first + i, *row) for i, row in enumerate(rows)]
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        # the rows this statement inserted come back with their ids; only those another
        # writer stored first (or that were there already) are looked up
        ids = dict(
            execute_many_returning(s, insert.returning(SENT.c.text_hash, SENT.c.id), keys, rows)
        )
    else:
        inserted = execute_many(s, insert, keys, rows)
        ids = {}
        if inserted == len(ordered) and dialect.name == "sqlite":
            ids = _ids_just_inserted(s, ordered) or {}
    missing = [h for h in ordered if h not in ids]
    if missing:
        ids.update((h, sid) for h, (sid, _) in known(s, lang, missing).items())
    return ids


def _first_free_id(s: Session) -> int | None:
    """On SQLite, the id the next sentence must take for no removed sentence's id to be
    given again, when SQLite's own choice (the largest id plus one) would not do."""
    floor = _id_floor(s)
    if floor is None:
        return None
    top = s.execute(select(func.max(SENT.c.id))).scalar()
    return floor + 1 if top is None or int(top) < floor else None


def _id_floor(s: Session) -> int | None:
    found = s.execute(select(SETTINGS.c.value).where(SETTINGS.c.key == ID_FLOOR)).scalar()
    return None if found is None else int(found)


def _raise_id_floor(s: Session, removed: np.ndarray) -> None:
    """Remember the highest id among ``removed`` (SQLite: see :data:`ID_FLOOR`)."""
    if not len(removed) or s.get_bind().dialect.name != "sqlite":
        return
    highest = max(int(removed.max()), _id_floor(s) or 0)
    stmt = sqlite.insert(SETTINGS).values(key=ID_FLOOR, value=highest)
    s.execute(stmt.on_conflict_do_update(index_elements=[SETTINGS.c.key], set_={"value": highest}))


def _ids_just_inserted(s: Session, hashes: list[str]) -> dict[str, int] | None:
    """``hash -> id`` of sentences this transaction has just inserted on SQLite, in
    ``hashes``' order, without looking each one up (that look-up was most of ``known``'s
    0.30-0.33 s per 60,000 sentences, ``benchmarks/storage.py``); None when the ids cannot
    be vouched for.

    SQLite gives a new row the largest id so far plus one, and the transaction holds the
    database's only write lock from its first insert on, so the rows have the consecutive
    ids that end at the largest id now. The first and the last row are checked.
    """
    last = s.execute(select(func.max(SENT.c.id))).scalar()
    if last is None:
        return None
    first = int(last) - len(hashes) + 1
    ends = dict(
        s.execute(select(SENT.c.id, SENT.c.text_hash).where(SENT.c.id.in_([first, int(last)])))
        .tuples()
        .all()
    )
    if ends.get(first) != hashes[0] or ends.get(int(last)) != hashes[-1]:
        return None
    return dict(zip(hashes, range(first, int(last) + 1)))


OCCURRENCE_KEYS = ["source_id", "position", "part", "sentence_id", "ext_id"]
#: an occurrence row, in the order of :data:`OCCURRENCE_KEYS`
OccurrenceRow = tuple[int, int, int, int, str | None]
#: an occurrence's (position, part) in its source
Key = tuple[int, int]


def add_occurrences(s: Session, rows: list[OccurrenceRow]) -> None:
    """Remember where sentences were met: ``(source id, position, part, sentence id, ext
    id)`` rows; a rewritten file's position takes its new sentence."""
    if rows:
        stmt = insert_for(s, OCC)
        execute_many(
            s,
            stmt.on_conflict_do_update(
                index_elements=[OCC.c.source_id, OCC.c.position, OCC.c.part],
                set_={"sentence_id": stmt.excluded.sentence_id, "ext_id": stmt.excluded.ext_id},
            ),
            OCCURRENCE_KEYS,
            sorted(rows, key=lambda row: row[:3]),  # one lock order for every writer
        )


def occurrences_between(
    s: Session, sid: int, after: Key | None, upto: Key | None
) -> list[tuple[int, int, int, str | None]]:
    """``(position, part, sentence id, ext id)`` of the source's occurrences whose key lies
    after ``after`` and at most at ``upto`` (None: unbounded), in key order."""
    key = tuple_(OCC.c.position, OCC.c.part)
    query = select(OCC.c.position, OCC.c.part, OCC.c.sentence_id, OCC.c.ext_id).where(
        OCC.c.source_id == sid
    )
    if after is not None:  # the plain position bound lets the primary key serve the range
        query = query.where(OCC.c.position >= after[0], key > tuple_(*after))
    if upto is not None:
        query = query.where(OCC.c.position <= upto[0], key <= tuple_(*upto))
    rows = s.execute(query.order_by(OCC.c.position, OCC.c.part))
    return [(int(p), int(q), int(i), e) for p, q, i, e in rows]


def delete_occurrences(s: Session, sid: int, keys: Sequence[Key]) -> None:
    """Delete the source's occurrences at ``keys``."""
    statement = delete(OCC).where(
        OCC.c.source_id == bindparam("source_id"),
        OCC.c.position == bindparam("position"),
        OCC.c.part == bindparam("part"),
    )
    execute_many(
        s, statement, ["source_id", "position", "part"], [(sid, p, q) for p, q in sorted(keys)]
    )


def held(s: Session, ids: Sequence[int], *, besides: int | None = None) -> set[int]:
    """Those of ``ids`` that some source holds (one other than ``besides``, when given)."""
    found: set[int] = set()
    for chunk in chunks(sorted(ids)):
        query = select(OCC.c.sentence_id).where(OCC.c.sentence_id.in_(chunk))
        if besides is not None:
            query = query.where(OCC.c.source_id != besides)
        found.update(int(i) for i in s.execute(query.distinct()).scalars())
    return found


def unheld_among(s: Session, ids: Sequence[int]) -> np.ndarray:
    """Those of ``ids`` that no source holds (no occurrence), sorted."""
    return np.array(sorted(set(ids) - held(s, ids)), dtype=np.int64)


def note_displaced(s: Session, ids: Sequence[int]) -> None:
    """Record sentences that lost a line of a changed file (see :func:`displaced`)."""
    if ids:
        statement = insert_for(s, DISPLACED).on_conflict_do_nothing()
        execute_many(s, statement, ["sentence_id"], [(int(i),) for i in sorted(ids)])


def displaced(s: Session) -> dict[str, list[int]]:
    """The sentences recorded by :func:`note_displaced` and not yet dealt with, by
    language."""
    query = (
        select(SENT.c.lang, DISPLACED.c.sentence_id)
        .join(SENT, SENT.c.id == DISPLACED.c.sentence_id)
        .order_by(DISPLACED.c.sentence_id)
    )
    out: dict[str, list[int]] = {}
    for lang, sid in s.execute(query):
        out.setdefault(lang, []).append(int(sid))
    return out


def forget_displaced(s: Session, ids: Sequence[int]) -> None:
    """Forget recorded sentences (a source holds them again, or they were removed)."""
    for chunk in chunks(list(ids)):
        s.execute(delete(DISPLACED).where(DISPLACED.c.sentence_id.in_(chunk)))


#: the source that ``check --repair`` gives the sentences no source holds
UNATTRIBUTED = "(unattributed)"


def attribute(s: Session, lang: str, ids: Sequence[int]) -> int:
    """Add sentences of ``lang`` that no source holds to the source :data:`UNATTRIBUTED`
    (created on first use), after its last position, so that ``sources`` lists them and
    ``remove`` can take them out; returns how many."""
    if not len(ids):
        return 0
    src = source_id(s, lang, UNATTRIBUTED, None)
    first = reserve_positions(s, src, len(ids))
    add_occurrences(s, [(src, first + i, 0, int(sid), None) for i, sid in enumerate(ids)])
    return len(ids)


def mark_indexed(s: Session, ids: Sequence[int]) -> None:
    """Mark ``ids`` indexed: one UPDATE per run of consecutive ids (the new sentences of
    a batch are mostly one run), in id order."""
    ordered = np.unique(np.asarray(ids, dtype=np.int64))
    if not len(ordered):
        return
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    firsts = ordered[np.r_[0, breaks]].tolist()
    lasts = ordered[np.r_[breaks - 1, len(ordered) - 1]].tolist()
    yes = db_value(s, SENT.c.indexed, True)
    execute_many(
        s,
        update(SENT)
        .where(SENT.c.id.between(bindparam("first"), bindparam("last")))
        .values(indexed=bindparam("yes")),
        ["yes", "first", "last"],
        [(yes, first, last) for first, last in zip(firsts, lasts)],
    )


def unindexed(
    s: Session, lang: str | None, limit: int, exclude: Sequence[str] = ()
) -> list[tuple[int, str, str]]:
    """Sentences stored without a vector yet: ``(id, lang, text)``, oldest first."""
    query = select(SENT.c.id, SENT.c.lang, SENT.c.text).where(SENT.c.indexed.is_(False))
    if lang:
        query = query.where(SENT.c.lang == lang)
    if exclude:
        query = query.where(SENT.c.lang.not_in(list(exclude)))
    return [(int(a), b, c) for a, b, c in s.execute(query.order_by(SENT.c.id).limit(limit))]


def texts(s: Session, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """``id -> (lang, text)``."""
    out: dict[int, tuple[str, str]] = {}
    for chunk in chunks(list(ids)):
        for sid, lang, text in s.execute(
            select(SENT.c.id, SENT.c.lang, SENT.c.text).where(SENT.c.id.in_(chunk))
        ):
            out[int(sid)] = (lang, text)
    return out


def _str_chunks(values: Sequence[str], size: int = 4000) -> list[list[str]]:
    values = list(values)
    return [values[i : i + size] for i in range(0, len(values), size)]


def sample_indexed(s: Session, lang: str, n: int) -> list[tuple[int, str]]:
    """``(id, text)`` of sentences of ``lang`` that have their vector: ``n`` spread evenly
    over the ids, and the ``n`` longest (where a model's length limit shows), by id."""
    indexed = (SENT.c.lang == lang) & SENT.c.indexed
    low, high = s.execute(select(func.min(SENT.c.id), func.max(SENT.c.id)).where(indexed)).one()
    if low is None:
        return []
    found: dict[int, str] = {}
    for start in np.linspace(int(low), int(high), n).round().astype(np.int64).tolist():
        query = select(SENT.c.id, SENT.c.text).where(indexed, SENT.c.id >= start)
        row = s.execute(query.order_by(SENT.c.id).limit(1)).first()
        if row is not None:
            found[int(row[0])] = row[1]
    longest = select(SENT.c.id, SENT.c.text).where(indexed)
    longest = longest.order_by(func.length(SENT.c.text).desc(), SENT.c.id).limit(n)
    found.update((int(sid), text) for sid, text in s.execute(longest))
    return sorted(found.items())


def source_languages(s: Session) -> list[str]:
    """The languages that have sources, sorted (a table of one row a file: cheap)."""
    return sorted(s.execute(select(SRC.c.lang).distinct()).scalars())


def language_counts(s: Session) -> dict[str, dict[str, int]]:
    """Per language, in the languages' order: sentences, indexed sentences, sources."""
    out: dict[str, dict[str, int]] = {}
    for lang, total, indexed in s.execute(
        select(SENT.c.lang, func.count(), func.sum(SENT.c.indexed.cast(Integer))).group_by(
            SENT.c.lang
        )
    ):
        out[lang] = {"sentences": int(total), "indexed": int(indexed or 0), "sources": 0}
    for lang, n in s.execute(select(SRC.c.lang, func.count()).group_by(SRC.c.lang)):
        out.setdefault(lang, {"sentences": 0, "indexed": 0, "sources": 0})["sources"] = int(n)
    return dict(sorted(out.items()))  # GROUP BY gives PostgreSQL's hash order


def list_sources(
    s: Session, lang: str | None = None, names: Sequence[str] | None = None
) -> list[dict[str, object]]:
    """The sources (of ``lang``, of those ``names``, or all), by language and name, with the
    number of sentences each gave (``occurrences``: one a line, unless ``split_sentences``)
    and of distinct sentences among them."""
    chosen = select(SRC.c.id)
    if lang is not None:
        chosen = chosen.where(SRC.c.lang == lang)
    if names is not None:
        chosen = chosen.where(SRC.c.name.in_(list(names)))
    counts = (
        select(
            OCC.c.source_id,
            func.count().label("occurrences"),
            func.count(OCC.c.sentence_id.distinct()).label("sentences"),
        )
        .where(OCC.c.source_id.in_(chosen))
        .group_by(OCC.c.source_id)
        .subquery()
    )
    query = (
        select(SRC, counts.c.occurrences, counts.c.sentences)
        .outerjoin(counts, counts.c.source_id == SRC.c.id)
        .where(SRC.c.id.in_(chosen))
        .order_by(SRC.c.lang, SRC.c.name)
    )
    return [
        {
            "id": int(row.id),
            "lang": row.lang,
            "name": row.name,
            "path": row.path,
            "records": int(row.records),
            "split_sentences": bool(row.split_sentences),
            "occurrences": int(row.occurrences or 0),
            "sentences": int(row.sentences or 0),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
        for row in s.execute(query)
    ]


def source_names(s: Session, lang: str) -> list[str]:
    """The names of ``lang``'s sources, sorted."""
    query = select(SRC.c.name).where(SRC.c.lang == lang).order_by(SRC.c.name)
    return list(s.execute(query).scalars())


def sentences_only_in(s: Session, source_ids: Sequence[int]) -> np.ndarray:
    """Ids of the sentences that occur in the given sources and in no other, sorted."""
    if not source_ids:
        return np.zeros(0, dtype=np.int64)
    others = OCC.alias("others")
    elsewhere = (
        select(others.c.sentence_id)
        .where(others.c.sentence_id == OCC.c.sentence_id, others.c.source_id.not_in(source_ids))
        .exists()
    )
    rows = s.execute(
        select(OCC.c.sentence_id)
        .where(OCC.c.source_id.in_(source_ids), ~elsewhere)
        .distinct()
        .order_by(OCC.c.sentence_id)
    ).scalars()
    return np.fromiter(rows, dtype=np.int64)


def count_sentences_in(s: Session, source_ids: Sequence[int]) -> int:
    """Distinct sentences that occur in any of the given sources."""
    query = select(func.count(OCC.c.sentence_id.distinct())).where(
        OCC.c.source_id.in_(list(source_ids))
    )
    return int(s.execute(query).scalar_one())


def remove_sources(s: Session, source_ids: Sequence[int], sentence_ids: np.ndarray) -> None:
    """Delete sources (their occurrences go with them) and sentences (and, by the schema's
    cascades, their lists, candidates and pairs: the accepted ones are recorded as
    withdrawn first)."""
    remove_sentences(s, sentence_ids)
    s.execute(delete(SRC).where(SRC.c.id.in_(list(source_ids))))


def remove_sentences(s: Session, sentence_ids: np.ndarray) -> None:
    """Delete sentences (and, by the schema's cascades, their occurrences, lists,
    candidates and pairs: the accepted ones are recorded as withdrawn first)."""
    withdraw_sentences(s, sentence_ids)
    _raise_id_floor(s, sentence_ids)
    for chunk in chunks(sentence_ids):
        s.execute(delete(SENT).where(SENT.c.id.in_(chunk)))
