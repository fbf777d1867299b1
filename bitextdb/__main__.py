"""``python -m bitextdb``: the command line."""

from .cli import main

main()
