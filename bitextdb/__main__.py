"""``python -m bitextdb``: the command line."""

from .console import main

main()
