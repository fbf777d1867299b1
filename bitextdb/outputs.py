"""Files that commands write (exports, withdrawal lists, plots): where and how.

A regular file is written whole under a temporary name beside it and renamed into place,
so a reader never meets half a file and a failed export leaves the old one. What is not
a regular file (``/dev/null``, a named pipe) is written straight: a rename would replace
the device or the pipe with a file. A symbolic link is followed, so the link stays and
its target gets the new content. The files of the database itself are refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .config import LOCATIONS_FILE, Locations, resolved_path
from .errors import InputError


@dataclass(frozen=True)
class OutputFile:
    """A file to write: ``path`` (links followed) and whether it is written in place."""

    path: Path
    direct: bool = False

    def temporary(self) -> Path:
        """Where to write: a temporary name beside a regular file, else the path itself."""
        if self.direct:
            return self.path
        return self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def install(self) -> None:
        """Move what was written to :meth:`temporary` into place."""
        if not self.direct:
            os.replace(self.temporary(), self.path)

    def discard(self) -> None:
        """Drop what was written to :meth:`temporary` (nothing, for a direct file)."""
        if not self.direct:
            with contextlib.suppress(OSError):
                self.temporary().unlink()


def output_file(path: str | os.PathLike[str], flag: str, locations: Locations) -> OutputFile:
    """Check ``path`` as a file to write for ``flag`` (a folder that exists, not a folder
    itself, not one of the database's files) and say how to write it."""
    given = Path(path).expanduser()
    if not given.name or given.is_dir():
        raise InputError(f"{given} is a directory; give a file name to {flag}.")
    resolved = Path(resolved_path(given))
    if not resolved.parent.is_dir():
        raise InputError(f"The folder {given.parent} does not exist.")
    if _holds_the_database(resolved, locations):
        raise InputError(f"{given} is a file of the database itself; give {flag} another file.")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        return OutputFile(resolved)
    return OutputFile(resolved, direct=not stat.S_ISREG(mode))


def _holds_the_database(path: Path, locations: Locations) -> bool:
    """Whether writing ``path`` would overwrite a file that holds the database: the SQLite
    file (and its journals), the home's settings and lock, the embedded vectors."""
    home = locations.home.resolve()
    files = {home / LOCATIONS_FILE, locations.lock_path.resolve()}
    if locations.db.startswith("sqlite:///"):
        database = Path(locations.db[len("sqlite:///") :]).resolve()
        files |= {database, *(database.with_name(database.name + x) for x in _JOURNALS)}
    return path in files or path.is_relative_to(locations.vectors_dir.resolve())


#: the files SQLite keeps beside a database
_JOURNALS = ("-journal", "-wal", "-shm")
