"""Where processing time goes: per-stage wall-clock seconds, accumulated by the code doing the work.

A :class:`StageTimes` is a plain counter of seconds per stage name (``decode``, ``detect``, ...). Stages add to
it with :meth:`StageTimes.timed` or :meth:`StageTimes.add`; whoever runs them takes the accumulated figures
with :meth:`StageTimes.take` (which resets the counter) and sums them across workers. Timing costs one
``perf_counter`` pair per call, so it is always on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class StageTimes:
    """Seconds per stage name (wall clock, ``time.perf_counter``)."""

    def __init__(self) -> None:
        self._seconds: Counter[str] = Counter()

    def add(self, stage: str, seconds: float) -> None:
        self._seconds[stage] += seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[stage] += time.perf_counter() - start

    def get(self, stage: str) -> float:
        return self._seconds.get(stage, 0.0)

    def take(self) -> dict[str, float]:
        """The accumulated seconds per stage since the last ``take``; resets the counter."""
        out = dict(self._seconds)
        self._seconds.clear()
        return out


def add_times(total: dict[str, float], part: Mapping[str, float]) -> None:
    """Add ``part``'s seconds into ``total`` (in place), stage by stage."""
    for stage, seconds in part.items():
        total[stage] = total.get(stage, 0.0) + float(seconds)
