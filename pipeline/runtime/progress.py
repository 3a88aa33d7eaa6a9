"""Progress bars with an ETA and end-of-run summaries (done / skipped / failed, with reasons).

On a terminal the bar redraws in place. When stderr is not a terminal (a log file, a pipe, a batch job) it
writes one plain line every ``LOG_INTERVAL`` seconds instead of thousands of carriage-return updates.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

from tqdm import tqdm

from pipeline.runtime.failures import DATA, ENVIRONMENT
from pipeline.runtime.log import is_quiet

LOG_INTERVAL = 5.0  # seconds between progress lines when stderr is not a terminal


class _LineWriter:
    """A file wrapper for tqdm that turns each redraw into one newline-terminated line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int, desc: str, unit: str = "seq") -> tqdm:
    """A tqdm bar on stderr showing rate and ETA; silent when ``total`` is 0 or under ``seqfer -q``; one line
    every ``LOG_INTERVAL`` seconds (and one at the end) when stderr is not a terminal."""
    stream = sys.stderr
    if is_quiet():
        return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=True)
    if _is_terminal(stream):
        return tqdm(
            total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, disable=total == 0, smoothing=0.1
        )
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=_LineWriter(stream),
        ncols=100,
        disable=total == 0,
        mininterval=LOG_INTERVAL,
        maxinterval=LOG_INTERVAL,
        smoothing=0.1,
        ascii=True,
    )


@dataclass
class RunSummary:
    """Counts of what a batch did; failures keep (item, reason). ``extra`` is printed and saved; ``details``
    (structured figures such as per-stage seconds) is saved with :meth:`as_dict` only. ``environment_failed``
    names the failed items whose failure was the environment's (a full disk, memory, a lost worker: see
    :mod:`pipeline.runtime.failures`); each of them is in ``failed`` too."""

    title: str
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    environment_failed: list[str] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    def add_failure(self, item: str, reason: str, kind: str = DATA) -> None:
        """Record a failed ``item``; ``kind`` :data:`~pipeline.runtime.failures.ENVIRONMENT` also lists it in
        ``environment_failed``."""
        self.failed.append((item, reason))
        if kind == ENVIRONMENT:
            self.environment_failed.append(item)

    def text(self, max_reasons: int = 8) -> str:
        total = self.done + self.skipped + self.n_failed
        lines = [
            f"{self.title}: {total} items in {self.seconds:.1f} s -- "
            f"done {self.done}, skipped (cached) {self.skipped}, failed {self.n_failed}"
        ]
        for key, value in self.extra.items():
            lines.append(f"  {key}: {value}")
        if self.failed:
            reasons = Counter(reason.split(":")[0] for _, reason in self.failed)
            lines.append("  failures by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
            for item, reason in self.failed[:max_reasons]:
                lines.append(f"    {item}: {reason}")
            if self.n_failed > max_reasons:
                lines.append(f"    ... and {self.n_failed - max_reasons} more (see the failures table)")
        if self.environment_failed:
            lines.append(
                f"  {len(self.environment_failed)} of the failures came from the environment, not the data "
                "(disk, memory or workers: see the reasons); fix it and run the same command again"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.n_failed,
            "seconds": round(self.seconds, 3),
            "failures": [{"item": i, "reason": r} for i, r in self.failed],
            **({"environment_failures": list(self.environment_failed)} if self.environment_failed else {}),
            **self.extra,
            **self.details,
        }


ENVIRONMENT_EXIT_CODE = 3
"""Exit code of a batch verb when items failed because of the environment (a full disk, a read-only folder,
memory, lost workers): its results are incomplete for reasons that are not the data's."""


def has_environment_failures(summary: RunSummary) -> bool:
    """Whether any item of ``summary`` failed because of the environment rather than its data."""
    return bool(summary.environment_failed)


def exit_code(summary: RunSummary) -> int:
    """A batch verb's exit code: :data:`ENVIRONMENT_EXIT_CODE` when an item failed because of the environment;
    else 1 when every item failed, 0 otherwise (failed data rows such as ``no_face`` are results, not errors)."""
    if has_environment_failures(summary):
        return ENVIRONMENT_EXIT_CODE
    return 0 if summary.done + summary.skipped > 0 or summary.n_failed == 0 else 1
