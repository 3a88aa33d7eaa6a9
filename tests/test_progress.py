"""Progress output: in a log file (stderr not a terminal) the bar writes sparse plain lines, never carriage returns."""

from __future__ import annotations

import io
import time

import pytest

from pipeline.runtime import progress


class _Log(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_log_gets_few_plain_lines_for_many_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    monkeypatch.setattr(progress.sys, "stderr", log)
    bar = progress.progress_bar(5000, "preprocess")
    for _ in range(5000):  # far faster than LOG_INTERVAL: only the first and the final line are written
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3
    assert lines[-1].startswith("preprocess: 100%") and "5000/5000" in lines[-1]


def test_log_gets_a_line_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    monkeypatch.setattr(progress.sys, "stderr", log)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)
    bar = progress.progress_bar(20, "work")
    for _ in range(20):
        time.sleep(0.02)
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert 4 <= len(lines) <= 15  # ~0.4 s of updates at one line per 0.05 s, never one line per update
    assert all(line.startswith("work:") for line in lines)
