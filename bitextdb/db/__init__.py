"""SQL storage: tables, engine and sessions, migrations. Nothing else touches SQL directly."""

from .engine import Database, never_initialised
from .tables import Base

__all__ = ["Base", "Database", "never_initialised"]
