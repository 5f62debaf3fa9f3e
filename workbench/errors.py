"""The workbench's error type: every bad input raises a subclass that says what is wrong and what would be right."""


class WorkbenchError(ValueError):
    """Base class of the workbench's input errors (a ValueError, so generic handlers still catch it)."""
