"""bitextdb: persistent, incremental margin-based mining of parallel sentences."""

from typing import TYPE_CHECKING, Any

from .allocator import tune_allocator
from .config import Settings
from .errors import (
    BitextDBError,
    BusyError,
    ClosedError,
    ConfigError,
    HistoryGoneError,
    InputError,
    ModelLoadError,
    ModelMismatchError,
    NotInitializedError,
    StoreUnavailableError,
    UnknownSourceError,
)

if TYPE_CHECKING:
    from .api import BitextDB, init, open

__version__ = "0.1.0"

__all__ = [
    "BitextDB",
    "BitextDBError",
    "BusyError",
    "ClosedError",
    "ConfigError",
    "HistoryGoneError",
    "InputError",
    "ModelLoadError",
    "ModelMismatchError",
    "NotInitializedError",
    "Settings",
    "StoreUnavailableError",
    "UnknownSourceError",
    "__version__",
    "init",
    "open",
    "tune_allocator",
]


def __getattr__(name: str) -> Any:
    # the library face loads torch and both Qdrant clients; a child process that only
    # needs one module of the package (the Edge writer) is spared them
    if name in ("BitextDB", "init", "open"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'bitextdb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
