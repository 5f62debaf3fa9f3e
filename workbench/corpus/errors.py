"""Errors raised by the corpus API: :class:`~workbench.errors.WorkbenchError` (``ValueError``) subclasses."""

from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.languages import UnknownLanguageError

__all__ = ["CorpusError", "NotEnoughRowsError", "UnknownLanguageError", "UnknownOptionError"]


class CorpusError(WorkbenchError):
    """Base class of corpus errors: a request the shipped data cannot satisfy."""


class NotEnoughRowsError(CorpusError):
    """More rows were requested (``n=``) than the selection holds."""


class UnknownOptionError(CorpusError):
    """An unknown split, source or other option value."""
