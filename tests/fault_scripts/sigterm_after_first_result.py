"""Run by tests/test_faults.py in its own process: ``seqfer preprocess CONFIG`` that receives SIGTERM right after
the driver has taken in its first batch's result (so at least one sequence is done and indexed when the signal
comes, whatever the machine's pace). Exits as the CLI does."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.preprocess import dispatch  # noqa: E402

_add = dispatch.Tally.add


def _add_then_signal(self: dispatch.Tally, result: dict) -> list[dict]:
    rows = _add(self, result)
    if not getattr(self, "_signalled", False):
        self._signalled = True
        os.kill(os.getpid(), signal.SIGTERM)
    return rows


dispatch.Tally.add = _add_then_signal

if __name__ == "__main__":
    from pipeline.cli import main

    sys.exit(main(["preprocess", sys.argv[1]]))
