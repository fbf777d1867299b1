"""Imports every module that adds commands to the ``bitextdb`` group."""

from . import translate  # noqa: F401
