"""Errors raised by stages for a problem the user can fix (a missing weights file, an unreadable video)."""


class StageError(ValueError):
    """A stage cannot run or cannot read an input; the message names the file and the problem."""


class MissingWeightsError(StageError):
    """A model file that must come from a local path (never downloaded) is absent."""
