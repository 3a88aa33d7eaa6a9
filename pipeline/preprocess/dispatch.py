"""The sequences of a preprocess run on Ray workers, in batches: frame lists grouped, each batch's rows and timings
gathered, a failed batch's sequences tried again one by one.

One Ray call and one landmark-table part per sequence cost more than a one-image sequence's own work (FER2013's
48 px faces), and a part per sequence was 9 % of a CK+-sized run's worker time (~7 ms a part). So sequences of
frame files travel in batches of up to :data:`BATCH_FRAMES` frames (fewer on small runs, so every worker gets
several): 256 one-image items, or ~15 CK+ sequences. Videos (their length is known only once decoded) and longer
frame lists go one to a call. A batch whose call fails (the worker died, the call raised or ran past
``ray.item_timeout``) is run again one sequence to a call, so one bad item fails alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline.runtime.batching import group_by_weight
from pipeline.runtime.failures import ItemTimeout, describe_failure
from pipeline.runtime.ray_pool import stream_to_actors
from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmark_store import part_name
from stages.record import SequenceStatus
from stages.timing import add_times

BATCH_FRAMES = 256
"""Most frames in one batch (one Ray call, one landmark-table part of ~350 bytes a row)."""
BATCHES_PER_WORKER = 4
"""Small runs are cut into at least this many batches per worker, so that the work spreads."""
RAMP = 4
"""The first batches hold 1/16, 1/8, 1/4 and 1/2 of a batch's frames, so that the first results (and the progress
bar) come back as soon as with a sequence to a call."""

Batch = tuple[str, list[SequenceSource]]
"""(landmark-table part name, sequences)."""


def _frames(source: SequenceSource) -> int | None:
    """A frame list's frame count, its weight in a batch; None for a video, which goes alone."""
    return None if source.video_path is not None else max(1, len(source.frame_paths))


def make_batches(todo: list[SequenceSource], n_workers: int, run: int, first: int = 0) -> list[Batch]:
    """``todo`` as batches in manifest order (:func:`pipeline.runtime.batching.group_by_weight`): frame lists
    grouped by their frames (the first batches smaller, :data:`RAMP`), videos and frame lists longer than a batch
    alone; part names ``part_name(run, first), part_name(run, first + 1), ...``."""
    groups = group_by_weight(todo, _frames, n_workers, BATCH_FRAMES, BATCHES_PER_WORKER, RAMP)
    return [(part_name(run, first + i), group) for i, group in enumerate(groups)]


def failed_row(source: SequenceSource, error: BaseException) -> dict:
    """The index row of a sequence whose worker call failed (``error``): timeout or error, with the reason and
    whether the environment (disk, memory, a lost worker) or the data caused it (``failure_kind``)."""
    timed_out = isinstance(error, ItemTimeout)
    failure = describe_failure(error)  # its own reason, first and last line whole; environment or data
    return {
        "sequence_id": source.sequence_id,
        "status": SequenceStatus.TIMEOUT if timed_out else SequenceStatus.ERROR,
        "cached": False,
        "reason": str(error) if timed_out else f"worker failed: {failure.reason}",
        "failure_kind": failure.kind,
        "n_frames": 0,
        "face_ratio": 0.0,
        "seconds": 0.0,
        "no_face_frames": [],
        **{f"{level}_key": "" for level in ("landmarks", "aligned", "trajectory")},
    }


@dataclass
class Tally:
    """What the batches of a run brought back: rows by sequence id, stage seconds summed over workers, each
    worker's peak RSS, the workers' busy wall and CPU seconds."""

    rows: dict[str, dict]
    stages: dict[str, float] = field(default_factory=dict)
    workers_rss: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    cpu: float = 0.0

    def add(self, result: dict) -> list[dict]:
        """Take in one batch's result; returns its rows."""
        add_times(self.stages, result["times"])
        self.busy += result["seconds"]
        self.cpu += result["cpu_seconds"]
        pid = str(result["pid"])
        self.workers_rss[pid] = max(self.workers_rss.get(pid, 0.0), result["peak_rss_mb"])
        for row in result["rows"]:
            self.rows[row["sequence_id"]] = row
        return result["rows"]


def run_batches(
    make_actor: Callable[[], object],
    n_workers: int,
    batches: list[Batch],
    force: bool,
    item_timeout: float | None,
    start_timeout: float,
    stop: Callable[[], bool],
) -> Iterator[tuple[Batch, dict | BaseException]]:
    """(batch, result or the failure) for every batch, in completion order; then, for the sequences of each failed
    batch of several, the same one sequence to a call (part names continuing the run's numbering)."""
    failed: list[Batch] = []
    rounds = [batches]
    while rounds:
        stream = stream_to_actors(
            make_actor,
            n_workers,
            rounds.pop(),
            lambda actor, batch: actor.process_batch.remote(batch[0], batch[1], force),
            item_timeout=item_timeout,
            start_timeout=start_timeout,
            stop=stop,
        )
        for batch, result in stream:
            if isinstance(result, BaseException) and len(batch[1]) > 1:
                failed.append(batch)
                continue
            yield batch, result
        if failed and not stop():
            run, last = _numbers(max(name for name, _ in batches))
            singles = [[source] for _, group in failed for source in group]
            rounds.append([(part_name(run, last + 1 + i), group) for i, group in enumerate(singles)])
            failed = []


def _numbers(name: str) -> tuple[int, int]:
    """(run, batch) of a part name."""
    _, run, batch = name.removesuffix(".parquet").split("-")
    return int(run), int(batch)


def tally_batches(
    stream: Iterator[tuple[Batch, dict | BaseException]], tally: Tally, on_rows: Callable[[list[dict]], None]
) -> None:
    """Feed every batch's rows into ``tally`` (a failure makes a failed row per sequence), calling ``on_rows``
    after each batch."""
    for (_, sources), result in stream:
        if isinstance(result, BaseException):
            rows = [failed_row(source, result) for source in sources]
            for row in rows:
                tally.rows[row["sequence_id"]] = row
        else:
            rows = tally.add(result)
        on_rows(rows)


def first_result_time(driver: dict[str, float], start: float) -> None:
    """Record, once, the seconds from process start to the first finished sequence in ``driver``."""
    if "first_result" not in driver:
        driver["first_result"] = driver["startup"] + time.perf_counter() - start
