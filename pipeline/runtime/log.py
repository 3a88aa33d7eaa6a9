"""Logging for every verb: the standard ``logging`` module, one logger per module, set up once by the CLI.

What a user reads on stderr stays plain: an INFO record is its message alone (``cv: 3 fold(s) already
finished ...``), a WARNING reads ``warning: <message>`` on one line (Python ``warnings`` included, without the
``file.py:36: UserWarning:`` prefix and source line), an ERROR ``error: <message>``. ``-q`` keeps warnings and
errors only and hides progress bars; ``-v`` adds DEBUG records (with the logger's name). ``--log-file PATH``
also appends every record, DEBUG included, with a timestamp, level and logger, for batch jobs.

Modules log with ``log = logging.getLogger(__name__)``; only this module configures handlers.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

PROJECT_LOGGERS = ("pipeline", "stages", "data_manifests", "py.warnings")
"""The loggers whose records reach the user: the project's three packages and Python's warnings."""

QUIET, NORMAL, VERBOSE = -1, 0, 1

_HANDLER_MARK = "_seqfer_handler"
_state = {"verbosity": NORMAL}


class UserFormatter(logging.Formatter):
    """One plain line per record for a person reading stderr: the message, prefixed by ``warning:`` /
    ``error:`` from WARNING up, and by ``debug: <logger>:`` for DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {message}"
        return message


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted (pytest's capture, a redirected
    stream), not the one current when logging was set up."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` replacement: a Python warning as one ``warning:`` line (the category is kept
    when it says more than ``UserWarning``)."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    if category not in (UserWarning, RuntimeWarning):
        text = f"{category.__name__}: {text}"
    logging.getLogger("py.warnings").warning(text)


def setup_logging(verbosity: int = NORMAL, log_file: Path | None = None) -> None:
    """Configure the project's loggers for one command (idempotent: a second call replaces the handlers it
    added, so tests may call it repeatedly).

    ``verbosity``: :data:`QUIET` (warnings and errors), :data:`NORMAL` (info) or :data:`VERBOSE` (debug);
    ``log_file``: also append every record there (its folder must exist)."""
    _state["verbosity"] = verbosity
    level = {QUIET: logging.WARNING, NORMAL: logging.INFO}.get(verbosity, logging.DEBUG)
    handlers: list[logging.Handler] = []
    console = _StderrHandler()
    console.setLevel(level)
    console.setFormatter(UserFormatter())
    handlers.append(console)
    if log_file is not None:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(logging.DEBUG)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(to_file)
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            setattr(handler, _HANDLER_MARK, True)
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if log_file is not None else level)
        logger.propagate = False
    warnings.showwarning = _show_warning


def is_quiet() -> bool:
    """True under ``-q``: progress bars stay hidden."""
    return _state["verbosity"] <= QUIET
