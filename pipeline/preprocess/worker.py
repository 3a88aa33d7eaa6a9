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
from stages.preprocess.landmark_table import landmark_columns, write_landmark_table
from stages.preprocess.sequence import SequenceConfig, SequenceOutcome, SequenceProcessor


def table_path(tables_dir: Path, sequence_id: str) -> Path:
    return Path(tables_dir) / f"{sequence_id}.parquet"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class PreprocessWorker:
    """Runs on one Ray worker: builds the landmarker once (at start), processes sequences, writes their landmark
    tables. Each result carries the stage seconds it spent (see :class:`~stages.preprocess.sequence.SequenceProcessor`,
    plus ``table_write``), its wall and CPU seconds (CPU below wall: the worker waited for a core), the worker's
    pid and its peak RSS so far."""

    def __init__(self, seq_cfg: dict, cache_root: str, tables_dir: str, export_csv: bool) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.processor = SequenceProcessor(SequenceConfig.model_validate(seq_cfg), Path(cache_root))
        _ = self.processor.landmarker  # build the models now, once, not inside the first sequence's time
        self.processor.times.take()
        self.tables_dir = Path(tables_dir)
        self.export_csv = export_csv

    def process(self, source: SequenceSource, force: bool) -> dict:
        start, cpu = time.perf_counter(), time.process_time()
        outcome = self.processor.process(source, force=force)
        times = self.processor.times.take()
        if outcome.landmark_arrays is not None:
            t0 = time.perf_counter()
            lm = outcome.landmark_arrays
            table = landmark_columns(
                source.sequence_id,
                lm.frame_indices,
                lm.timestamps,
                lm.confidence,
                lm.success,
                lm.landmarks,
            )
            write_landmark_table(table, table_path(self.tables_dir, source.sequence_id), csv=self.export_csv)
            times["table_write"] = time.perf_counter() - t0
        seconds = time.perf_counter() - start
        times["other"] = max(0.0, seconds - sum(times.values()))
        return {
            **outcome_row(outcome),
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu,
            "no_face_frames": no_face_frames(outcome),
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
