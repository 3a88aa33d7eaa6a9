"""The command line's process around its commands: one line for a user's mistake (an error the operating system
or typer raised), the ``--version`` line, and how the process ends once a command has returned."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import typer


def os_error_text(exc: OSError) -> str:
    """One line for an operating-system error: the file(s) it names and the system's reason, never a traceback
    (``[Errno 30] Read-only file system: 'out.csv'`` -> ``out.csv: Read-only file system``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
"""What typer raises for a command line it cannot parse (an unknown command or option, a missing argument, a bad
value): click's ``ClickException`` up to typer 0.2x, the same class of typer's own copy of click since."""


def usage_error_text(exc: Exception) -> str:
    """One line for a command line typer could not parse: its message and where the usage is
    (``No such option: --bogus (seqfer predict --help shows the usage)``)."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path} --help" if ctx is not None else "seqfer --help"
    return f"{message} ({where} shows the usage)"


def version_text() -> str:
    """``seqfer X.Y.Z`` with the versions of the libraries that decide its numbers (read from the installed
    packages' metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    libs = ", ".join(f"{name} {of(dist)}" for name, dist in VERSION_LIBS)
    return f"seqfer {of('seqfer')} (Python {sys.version.split()[0]}; {libs})"


VERSION_LIBS = (
    ("torch", "torch"),
    ("ray", "ray"),
    ("dlib", "dlib-bin"),
    ("numpy", "numpy"),
    ("opencv", "opencv-python-headless"),
)
"""(name shown, distribution) of the libraries `seqfer --version` names."""


def show_version(value: bool) -> None:
    """The ``--version`` option's callback: print :func:`version_text` and end the command (exit code 0)."""
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


def end_process(code: int) -> NoReturn:
    """End this process with exit ``code`` once a command has returned, quickly.

    Everything the command wrote is closed and renamed into place by then. What the interpreter would still do is
    its threads' shutdown (the hooks that tell executors' threads to stop, then a join of every thread that is not a
    daemon), the exit handlers (the local Ray instance's stop, logging's flush, multiprocessing's children), and
    then free every module: ~0.4-0.9 s with pandas, scikit-learn, Ray and torch loaded, on every command. This runs
    the first two with the interpreter's own functions, flushes stdout and stderr, and ends the process without the
    third. (Joining the threads without those hooks would wait forever on an executor nobody shut down.)"""
    threading._shutdown()  # noqa: SLF001 - what the interpreter's finalisation calls first, in the main thread
    atexit._run_exitfuncs()  # noqa: SLF001 - then CPython's exit handlers, run once, in their order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that has gone (`seqfer ... | head`), a stream closed by a caller
            pass
    os._exit(code)
