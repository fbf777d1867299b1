"""SQL storage: tables, engine and sessions, migrations. Nothing else touches SQL directly."""

from .engine import Database
from .tables import Base

__all__ = ["Base", "Database"]
