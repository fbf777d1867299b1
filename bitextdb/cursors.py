"""Export cursors and the withdrawal records they read: list, forget, prune.

``export --cursor NAME --withdrawn PATH`` reads the records of the pairs withdrawn since
the cursor's last export (``withdrawn_pairs``). A record every cursor of its pair has
passed is needed by none of them (a new cursor starts with a whole export), so
:func:`prune_withdrawn` deletes those, except the ones younger than ``keep``: they stay
for ``--since`` readers, who have no cursor to go by.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .config import pair_name
from .db import export_sql
from .db.tables import utcnow
from .errors import InputError

if TYPE_CHECKING:
    from .api import BitextDB


def list_cursors(db: BitextDB) -> list[dict[str, Any]]:
    """Every named export cursor: name, pair, last_exported_at (ISO, UTC), min_score and
    filters (:meth:`bitextdb.filters.PairFilter.as_dict`; None for cursors older than
    filters)."""
    with db.db.session() as s:
        rows = export_sql.list_cursors(s)
    return [row | {"last_exported_at": row["last_exported_at"].isoformat()} for row in rows]


def drop_cursor(db: BitextDB, name: str) -> None:
    """Forget a named cursor (its next export under that name is whole again)."""
    with db.db.session() as s:
        if export_sql.delete_cursor(s, name):
            return
        names = [row["name"] for row in export_sql.list_cursors(s)]
    held = ", ".join(repr(n) for n in names) or "none"
    raise InputError(f"There is no export cursor {name!r} (cursors: {held}).")


def prune_withdrawn(
    db: BitextDB, *, keep: timedelta = timedelta(days=7), dry_run: bool = False
) -> dict[str, Any]:
    """Delete the withdrawal records that every cursor of their pair has passed and that
    are older than ``keep``; with ``dry_run`` only count them.

    Returns ``{"deleted": n, "kept": m, "dry_run": bool, "pairs": [{"pair", "before",
    "deleted", "kept"}, ...]}`` where ``before`` is the moment older records went.
    """
    if keep < timedelta(0):
        raise InputError("--keep-days cannot be negative.")
    now = utcnow()
    report: dict[str, Any] = {"deleted": 0, "kept": 0, "dry_run": dry_run, "pairs": []}
    with db.db.session() as s:
        cursors = export_sql.list_cursors(s)
        for (a, b), held in sorted(export_sql.withdrawn_pairs_held(s).items()):
            name = pair_name(a, b)
            passed = [c["last_exported_at"] for c in cursors if c["pair"] == name]
            before: datetime = min([now - keep, *passed])
            deleted = export_sql.prune_withdrawn(s, a, b, before, dry_run=dry_run)
            report["pairs"].append(
                {
                    "pair": name,
                    "before": before.isoformat(),
                    "deleted": deleted,
                    "kept": held - deleted,
                }
            )
            report["deleted"] += deleted
            report["kept"] += held - deleted
    return report
