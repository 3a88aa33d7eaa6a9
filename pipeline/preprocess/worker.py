"""The preprocess worker: what runs inside each Ray actor of `seqfer preprocess`.

Kept apart from :mod:`pipeline.preprocess.run` so that a worker imports only the stages it runs (decode, landmarks,
align, trajectory, cache, landmark tables): not the config system, the manifest scanners or torch. The driver
imports this module too, for the row helpers.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmark_store import SequenceTable, write_part
from stages.preprocess.sequence import SequenceConfig, SequenceOutcome, SequenceProcessor
from stages.timing import add_times


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class PreprocessWorker:
    """Runs on one Ray worker: builds the landmarker once (at start), processes batches of sequences and writes each
    batch's landmark tables as one part (:mod:`stages.preprocess.landmark_store`).

    A batch's result holds a row per sequence (:func:`outcome_row` plus ``seconds`` and ``no_face_frames``) and,
    for the whole batch: the stage seconds it spent (see :class:`~stages.preprocess.sequence.SequenceProcessor`,
    plus ``table_write``), its wall and CPU seconds (CPU below wall: the worker waited for a core), the worker's
    pid and its peak RSS so far."""

    def __init__(self, seq_cfg: dict, cache_root: str, tables_dir: str, csv_dir: str | None) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.processor = SequenceProcessor(SequenceConfig.model_validate(seq_cfg), Path(cache_root))
        _ = self.processor.landmarker  # build the models now, once, not inside the first sequence's time
        self.processor.times.take()
        self.tables_dir = Path(tables_dir)
        self.csv_dir = None if csv_dir is None else Path(csv_dir)

    def process_batch(self, part: str, sources: list[SequenceSource], force: bool) -> dict:
        """Process ``sources`` in order and write the landmark tables of those that have one as the part named
        ``part``; returns the rows and the batch's timings."""
        start, cpu = time.perf_counter(), time.process_time()
        rows, tables, times = [], [], {}
        for source in sources:
            t0 = time.perf_counter()
            outcome = self.processor.process(source, force=force)
            if outcome.landmark_arrays is not None:
                tables.append(SequenceTable(source.sequence_id, outcome.keys["landmarks"], outcome.landmark_arrays))
            rows.append(
                {
                    **outcome_row(outcome),
                    "seconds": time.perf_counter() - t0,
                    "no_face_frames": no_face_frames(outcome),
                }
            )
        add_times(times, self.processor.times.take())
        t0 = time.perf_counter()
        write_part(self.tables_dir, part, tables, self.csv_dir)
        times["table_write"] = time.perf_counter() - t0
        seconds = time.perf_counter() - start
        times["other"] = max(0.0, seconds - sum(times.values()))
        return {
            "rows": rows,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu,
            "times": times,
            "pid": os.getpid(),
            "peak_rss_mb": peak_rss_mb(),
        }


def outcome_row(outcome: SequenceOutcome) -> dict:
    return {
        "sequence_id": outcome.sequence_id,
        "status": outcome.status,
        "reason": outcome.reason,
        "n_frames": outcome.n_frames,
        "face_ratio": round(outcome.face_ratio, 4),
        "cached": outcome.cached,
        "landmarks_key": outcome.keys.get("landmarks", ""),
        "aligned_key": outcome.keys.get("aligned", ""),
        "trajectory_key": outcome.keys.get("trajectory", ""),
    }


def no_face_frames(outcome: SequenceOutcome) -> list[int]:
    lm = outcome.landmark_arrays
    if lm is None:
        return []
    return [int(i) for i, ok in zip(lm.frame_indices, lm.success, strict=True) if not ok]
