"""The ``bitextdb`` console script: the command line, with a Ctrl-C during its start-up
(importing it takes a second: NumPy, SQLAlchemy, the Qdrant clients) said in one line
instead of a traceback of whatever module was loading."""

from __future__ import annotations

import sys


def main() -> None:
    """Load the command line and run it."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted before it started; nothing was done.\n")
        sys.exit(130)
    run()
