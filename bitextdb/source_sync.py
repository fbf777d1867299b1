"""Keeping a file's source in step with the file when the file is ingested again.

A source holds one occurrence per (position, part): the sentences its file gave the last
time it was read. When the file has changed since, the read that follows compares what it
writes with what the source held, batch by batch and in key order:

- a key that now holds another sentence is *changed*;
- a key the read passed without writing (the line is gone, became empty, too long, of
  another language, or its record now splits into fewer sentences) is *dropped*, as is
  every key after the last one the read wrote.

Keys that hold what they held (the sentence and the external id) are not written again,
so reading an unchanged file again writes nothing but the source's record count.

The sentences that lost a key are *displaced*, and recorded as such in the transaction
that takes the key (``displaced_sentences``); those that no source holds at the end of the
ingest are removed as ``remove`` removes them (:func:`bitextdb.remove.remove_displaced`).
Checking at the end, not at once, keeps a line that only moved (a line inserted above it)
from being removed and ingested again; recording them lets an ingest stopped before its end
leave them to the next ingest, ``mine`` or ``check --repair``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from .db import corpus
from .db.corpus import Key, OccurrenceRow
from .errors import InputError


class SourceSync:
    """What one read of a file changed in its source (used by the ingest's storing stage,
    which meets the batches in reading order, so keys only grow)."""

    def __init__(self, source_id: int, *, write: bool = True) -> None:
        """``write=False`` only counts (``ingest --dry-run``): nothing is deleted or
        recorded."""
        self.source_id = source_id
        self.write = write
        self.changed = 0
        self.dropped = 0
        self.displaced: set[int] = set()
        #: positions the read skipped as not valid UTF-8 (its ReadStats', filled as it
        #: reads): a line the source held may not leave for that
        self.unreadable: set[int] = set()
        self._after: Key | None = None  # keys up to this one are settled

    def reconcile(self, s: Session, rows: list[OccurrenceRow]) -> list[OccurrenceRow]:
        """Before a batch's occurrences ``rows`` are written: note the keys that change,
        drop those the read passed over, and return the rows that need writing (those
        the source does not hold as they are)."""
        if not rows:
            return rows
        last = (rows[-1][1], rows[-1][2])
        stored = self._settle(s, self._after, last, {(r[1], r[2]): (r[3], r[4]) for r in rows})
        self._after = last
        return [row for row in rows if (row[1], row[2]) not in stored]

    def finish(self, s: Session) -> None:
        """After the last batch: drop every key after the last one the read wrote."""
        self._settle(s, self._after, None, {})

    def _settle(
        self,
        s: Session,
        after: Key | None,
        upto: Key | None,
        written: dict[Key, tuple[int, str | None]],
    ) -> set[Key]:
        """Compare the source's keys in (``after``, ``upto``] with ``written``; returns
        those it already holds as written."""
        gone: list[Key] = []
        stored: set[Key] = set()
        displaced: list[int] = []
        for position, part, held, ext_id in corpus.occurrences_between(
            s, self.source_id, after, upto
        ):
            key = (position, part)
            now = written.get(key)
            if now is None:
                gone.append(key)
                displaced.append(held)
            elif now[0] != held:
                self.changed += 1
                displaced.append(held)
            elif now[1] == ext_id:
                stored.add(key)
        unreadable = [position for position, _ in gone if position in self.unreadable]
        if unreadable:
            raise InputError(
                f"Line {unreadable[0] + 1} of the file held a sentence of its source and is no "
                f"longer valid UTF-8 ({len(unreadable)} such lines here): was the file's "
                "encoding changed? No line was dropped for it; make the file UTF-8 again and "
                "ingest it again (to take a line out, delete it from the file)."
            )
        self.displaced.update(displaced)
        self.dropped += len(gone)
        if self.write:
            # recorded with the change, so that an ingest stopped before its end leaves
            # them to the next one
            corpus.note_displaced(s, displaced)
            if gone:
                corpus.delete_occurrences(s, self.source_id, gone)
        return stored
