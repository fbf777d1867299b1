"""Where stopping is no longer a way back.

The command line turns Ctrl-C and SIGTERM into exceptions, and a command they stop says
"rerun to resume". Once a command's work is committed (an export's files put in place and
its cursor about to move, a ``with bitextdb.open(...)`` block ended), a rerun would not do
that work again but something else: a cursor export would write an empty change set over
the one just written. :func:`committed` marks that point; a program that asked for it
(:func:`finish_once_committed`, as the command line does) then lets the rest run to its
end, noting the signal instead of raising it. A library caller that did not ask is left
as it was.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

_finish = False
#: the signals noted after the commit point
caught: list[int] = []


def finish_once_committed() -> None:
    """Let work past :func:`committed` run to its end when SIGINT or SIGTERM arrive."""
    global _finish
    _finish = True


def committed() -> None:
    """The caller's work is committed: from here on, if :func:`finish_once_committed` was
    asked, SIGINT and SIGTERM are noted (one line on stderr) and the process goes on."""
    if not _finish or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _note)


def _note(signum: int, _frame: FrameType | None) -> None:
    if not caught:
        sys.stderr.write("Interrupted after the work was committed: finishing it.\n")
    caught.append(signum)
