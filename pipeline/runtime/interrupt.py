"""Stopping cleanly on SIGTERM or Ctrl-C: finish the bookkeeping for what is done, then exit 143 or 130.

Raising from a signal handler while Ray is inside native code can abort the process (exit 134, no outputs), so
:func:`stop_on_signals` only records the signal; long loops poll :attr:`StopFlag.is_set` between items, stop
submitting work, write their outputs for what is finished, and raise :class:`Interrupted`, which the CLI turns
into its message and ``128 + signal`` exit code. A second Ctrl-C raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(Exception):
    """A run stopped by a signal after saving what it had finished; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopFlag:
    """Set by :func:`stop_on_signals`' handlers; ``signum`` is the first signal received (0: none)."""

    def __init__(self) -> None:
        self.signum = 0

    def is_set(self) -> bool:
        return self.signum != 0


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[StopFlag]:
    """Within the block, SIGTERM / SIGINT set the yielded flag instead of killing the process (a second SIGINT
    raises KeyboardInterrupt). The previous handlers are restored on exit. Outside the main thread (where Python
    cannot install handlers) the flag simply never sets."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: object) -> None:
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signum = flag.signum or signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
