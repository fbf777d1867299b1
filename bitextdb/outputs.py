"""Files that commands write (exports, withdrawal lists, plots): where and how.

A regular file is written whole under a temporary name beside it and renamed into place,
so a reader never meets half a file and a failed export leaves the old one. What is not
a regular file (``/dev/null``, a named pipe) is written straight: a rename would replace
the device or the pipe with a file. A symbolic link is followed, so the link stays and
its target gets the new content. A name of one of this process' open descriptors
(``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``) is written through
that descriptor: opened again by name, a file the shell opened with ``>>`` would be
truncated, and followed to its target, a pipe has no name to open. The files of the
database itself are refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .config import LOCATIONS_FILE, Locations, resolved_path, sqlite_file
from .errors import InputError


@dataclass(frozen=True)
class OutputFile:
    """A file to write: ``path`` (links followed), whether it is written in place, and
    the open descriptor to write through when it names one."""

    path: Path
    direct: bool = False
    descriptor: int | None = None

    def open_binary(self) -> IO[bytes]:
        """The file to write, opened: the descriptor, the path itself, or the temporary."""
        if self.descriptor is not None:
            return os.fdopen(os.dup(self.descriptor), "wb")
        return open(self.temporary(), "wb")

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
    descriptor = _descriptor(given)
    if descriptor is not None:
        try:
            mode = fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            raise InputError(f"{given} names descriptor {descriptor}, which is not open.") from None
        if mode == os.O_RDONLY:
            raise InputError(f"{given} names descriptor {descriptor}, open for reading only.")
        # this process' own descriptors include the database's files (3: bitextdb.sqlite)
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{descriptor}")
            if target.startswith("/") and _holds_the_database(Path(target), locations):
                raise InputError(
                    f"{given} is a file of the database itself; give {flag} another file."
                )
        return OutputFile(given, direct=True, descriptor=descriptor)
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


_DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")
_STANDARD = {"/dev/stdout": 1, "/dev/stderr": 2}


def _descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names, if it names one."""
    text = os.path.normpath(str(path))
    if text in _STANDARD:
        return _STANDARD[text]
    match = _DESCRIPTOR.fullmatch(text)
    return int(match.group(1)) if match else None


def _holds_the_database(path: Path, locations: Locations) -> bool:
    """Whether writing ``path`` would overwrite a file that holds the database: the SQLite
    file (and its journals), the home's settings and lock, the embedded vectors."""
    home = locations.home.resolve()
    files = {home / LOCATIONS_FILE, locations.lock_path.resolve()}
    database_file = sqlite_file(locations.db)
    if database_file is not None:
        database = database_file.resolve()
        files |= {database, *(database.with_name(database.name + x) for x in _JOURNALS)}
    return path in files or path.is_relative_to(locations.vectors_dir.resolve())


#: the files SQLite keeps beside a database
_JOURNALS = ("-journal", "-wal", "-shm")
