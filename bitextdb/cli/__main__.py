"""``python -m bitextdb.cli``: the command line."""

from . import main

main()
