"""Imports every module that adds commands to the ``bitextdb`` group."""
# ruff: noqa: F401, I001

from . import translate
from . import check
from . import export
from . import serve
from . import sources
