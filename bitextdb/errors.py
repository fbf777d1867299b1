"""Domain errors: each carries one sentence for the user; the CLI prints it and exits non-zero."""

from __future__ import annotations


class BitextDBError(Exception):
    """Base class of every error bitextdb raises on purpose."""

    exit_code = 1
    #: what the call finished before it failed (``ingest`` of several files: the report of
    #: the files before the bad one), for ``--json`` to print; None when nothing was
    partial: object = None


class InputError(BitextDBError):
    """A corpus file, a flag value or a request body that cannot be used."""

    exit_code = 2


class HistoryGoneError(InputError):
    """The changes asked for go back further than the records kept of them."""


class UnknownSourceError(InputError):
    """A source named for removal that its language does not have."""


class ConfigError(BitextDBError):
    """Settings that contradict each other or the database."""

    exit_code = 2


class ClosedError(BitextDBError):
    """A :class:`bitextdb.BitextDB` used after ``close()`` (or its ``with`` block)."""


class NotInitializedError(BitextDBError):
    """The home has no database yet (run `bitextdb init`)."""

    exit_code = 2  # a command run before the one it needs, as a usage error


class ModelLoadError(BitextDBError):
    """The sentence encoder could not be loaded."""


class ModelMismatchError(BitextDBError):
    """A model or dimension other than the database's was asked for."""

    exit_code = 2


class StoreUnavailableError(BitextDBError):
    """The SQL database or the vector store cannot be reached."""

    exit_code = 3


class BusyError(BitextDBError):
    """Another writer holds this home."""

    exit_code = 4
