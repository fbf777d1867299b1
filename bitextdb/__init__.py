"""bitextdb: persistent, incremental margin-based mining of parallel sentences."""

from .allocator import tune_allocator
from .api import BitextDB, init, open
from .config import Settings
from .errors import (
    BitextDBError,
    BusyError,
    ConfigError,
    InputError,
    ModelLoadError,
    ModelMismatchError,
    NotInitializedError,
    StoreUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "BitextDB",
    "BitextDBError",
    "BusyError",
    "ConfigError",
    "InputError",
    "ModelLoadError",
    "ModelMismatchError",
    "NotInitializedError",
    "Settings",
    "StoreUnavailableError",
    "__version__",
    "init",
    "open",
    "tune_allocator",
]
