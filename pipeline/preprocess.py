"""`seqfer preprocess`: every manifest sequence through the stages, on Ray, into the cache and the run folder.

Outputs under ``OUTPUT_DIR/preprocess/``:
- ``index.parquet``: one row per sequence (status, reason, frames, face ratio, cache keys) -- what training reads;
- ``failures.csv``: every failed sequence and every frame without a face, with the reason;
- ``landmarks/<sequence_id>.parquet`` (+ ``.csv`` with ``preprocess.export_csv``): per-frame landmark tables in
  OpenFace's columns;
- ``summary.json``: done / skipped / failed counts and timing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.config import Config
from pipeline.dataset import prepare_manifest
from pipeline.interrupt import Interrupted, StopFlag, stop_on_signals
from pipeline.output_folder import claim_folder
from pipeline.progress import RunSummary, progress_bar
from pipeline.ray_runtime import ItemTimeout, ensure_ray, stream_to_actors
from stages.atomic_io import atomic_path, atomic_write_text
from stages.decode import SequenceSource
from stages.landmark_table import landmark_table, write_landmark_table
from stages.sequence import STATUS_OK, SequenceConfig, SequenceOutcome, SequenceProcessor

INDEX_COLUMNS = [
    "sequence_id",
    "status",
    "reason",
    "n_frames",
    "face_ratio",
    "cached",
    "landmarks_key",
    "aligned_key",
    "trajectory_key",
]


def preprocess_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "preprocess"


def sequence_config(cfg: Config) -> SequenceConfig:
    """The stage settings alone (what the cache keys depend on), without output locations."""
    return SequenceConfig.model_validate(cfg.preprocess.model_dump(include=set(SequenceConfig.model_fields)))


def source_from_row(row: pd.Series | dict) -> SequenceSource:
    """A manifest row -> the decode stage's source description."""
    get = row.get
    return SequenceSource(
        sequence_id=str(get("sequence_id")),
        frame_paths=tuple(get("frame_paths") or ()),
        video_path=None if pd.isna(get("video_path")) else str(get("video_path")),
        peak_index=None if pd.isna(get("peak_index")) else int(get("peak_index")),
        landmark_paths=tuple(get("landmark_paths") or ()),
    )


def table_path(tables_dir: Path, sequence_id: str) -> Path:
    return tables_dir / f"{sequence_id}.parquet"


class PreprocessWorker:
    """Runs on one Ray worker: builds the landmarker once, processes sequences, writes their landmark tables."""

    def __init__(self, seq_cfg: dict, cache_root: str, tables_dir: str, export_csv: bool) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.processor = SequenceProcessor(SequenceConfig.model_validate(seq_cfg), Path(cache_root))
        self.tables_dir = Path(tables_dir)
        self.export_csv = export_csv

    def process(self, source: SequenceSource, force: bool) -> dict:
        start = time.perf_counter()
        outcome = self.processor.process(source, force=force)
        if outcome.landmark_arrays is not None:
            lm = outcome.landmark_arrays
            table = landmark_table(
                source.sequence_id,
                lm["frame_indices"],
                lm["timestamps"],
                lm["confidence"],
                lm["success"],
                lm["landmarks"],
            )
            write_landmark_table(table, table_path(self.tables_dir, source.sequence_id), csv=self.export_csv)
        return {
            **_outcome_row(outcome),
            "seconds": time.perf_counter() - start,
            "no_face_frames": _no_face_frames(outcome),
        }


def _outcome_row(outcome: SequenceOutcome) -> dict:
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


def _no_face_frames(outcome: SequenceOutcome) -> list[int]:
    lm = outcome.landmark_arrays
    if lm is None:
        return []
    return [int(i) for i, ok in zip(lm["frame_indices"], lm["success"], strict=True) if not ok]


def run_preprocess(cfg: Config, force: bool = False, manifest: pd.DataFrame | None = None) -> RunSummary:
    """Preprocess every sequence of the manifest; skip what is cached (unless ``force``). Returns the summary."""
    start = time.perf_counter()
    df = manifest if manifest is not None else prepare_manifest(cfg)[0]
    out_dir = claim_folder(preprocess_dir(cfg), "preprocess", legacy=("landmarks",))
    tables_dir = out_dir / "landmarks"
    tables_dir.mkdir(parents=True, exist_ok=True)
    seq_cfg = sequence_config(cfg)
    local = SequenceProcessor(seq_cfg, cfg.cache_dir)

    rows: dict[str, dict] = {}
    todo: list[SequenceSource] = []
    for _, row in df.iterrows():
        source = source_from_row(row)
        cached = None if force else local.lookup(source)
        if cached is not None and table_path(tables_dir, source.sequence_id).is_file():
            rows[source.sequence_id] = {**_outcome_row(cached), "seconds": 0.0, "no_face_frames": None}
        else:
            todo.append(source)

    if todo:
        ensure_ray(cfg.ray)  # first: ray.init installs signal handlers of its own, which ours must replace
    with stop_on_signals() as stop_flag:  # SIGTERM / Ctrl-C: stop after the bookkeeping, exit 143 / 130
        _process_todo(cfg, todo, rows, seq_cfg, tables_dir, force, stop_flag)
    index = pd.DataFrame(  # rows of what is done: all of them unless a signal stopped the run
        [rows[s] for s in df["sequence_id"] if s in rows], columns=[*INDEX_COLUMNS, "seconds", "no_face_frames"]
    )
    summary = _write_outputs(cfg, df, index, start)
    if stop_flag.is_set():
        left = len(df) - len(index)
        summary.extra["interrupted"] = f"{left} sequence(s) not processed; run the same command again to resume"
        atomic_write_text(out_dir / "summary.json", json.dumps(summary.as_dict(), indent=2))
        print(summary.text(), file=sys.stderr)
        raise Interrupted(stop_flag.signum, f"preprocess stopped by signal {stop_flag.signum}: {len(index)} of "
                          f"{len(df)} sequences done and indexed in {out_dir}; run the same command to resume")
    print(summary.text(), file=sys.stderr)
    return summary


def _process_todo(cfg: Config, todo: list[SequenceSource], rows: dict[str, dict], seq_cfg: SequenceConfig,
                  tables_dir: Path, force: bool, stop_flag: StopFlag) -> None:
    """Run ``todo`` on Ray workers, adding each result to ``rows``; returns early when ``stop_flag`` is set."""
    if todo:
        import ray

        worker_cls = ray.remote(num_cpus=1)(PreprocessWorker)
        worker_args = (seq_cfg.model_dump(mode="json"), str(cfg.cache_dir), str(tables_dir), cfg.preprocess.export_csv)
        bar = progress_bar(len(todo), "preprocess")
        try:
            stream = stream_to_actors(lambda: worker_cls.remote(*worker_args), min(cfg.ray.workers, len(todo)), todo,
                                      lambda a, s: a.process.remote(s, force), item_timeout=cfg.ray.item_timeout,
                                      start_timeout=cfg.ray.start_timeout, stop=stop_flag.is_set)
            for source, result in stream:
                if isinstance(result, BaseException):  # the worker crashed on it: a failed row, the batch goes on
                    timed_out = isinstance(result, ItemTimeout)
                    result = {"sequence_id": source.sequence_id, "status": "timeout" if timed_out else "error",
                              "cached": False,
                              "reason": str(result) if timed_out else
                              f"worker failed: {type(result).__name__}: {str(result)[:300]}",
                              "n_frames": 0, "face_ratio": 0.0, "seconds": 0.0, "no_face_frames": [],
                              **{f"{level}_key": "" for level in ("landmarks", "aligned", "trajectory")}}
                rows[source.sequence_id] = result
                bar.update(1)
                if result["status"] != STATUS_OK:
                    bar.set_postfix_str(f"failed {sum(r['status'] != STATUS_OK for r in rows.values())}")
        finally:
            bar.close()


def _write_outputs(cfg: Config, df: pd.DataFrame, index: pd.DataFrame, start: float) -> RunSummary:
    out_dir = preprocess_dir(cfg)
    with atomic_path(out_dir / "index.parquet") as tmp:
        index[INDEX_COLUMNS].to_parquet(tmp, index=False)

    sources = dict(zip(df["sequence_id"], df["video_path"].fillna(""), strict=True))
    failures = []
    for row in index.itertuples():
        if row.status != STATUS_OK:
            failures.append(
                {
                    "sequence_id": row.sequence_id,
                    "frame": "",
                    "source": sources[row.sequence_id],
                    "status": row.status,
                    "reason": row.reason,
                }
            )
        for frame in row.no_face_frames or []:
            failures.append(
                {
                    "sequence_id": row.sequence_id,
                    "frame": frame,
                    "source": sources[row.sequence_id],
                    "status": "no_face_frame",
                    "reason": "no face found in this frame",
                }
            )
    pd.DataFrame(failures, columns=["sequence_id", "frame", "source", "status", "reason"]).to_csv(
        out_dir / "failures.csv", index=False
    )

    failed = index[index["status"] != STATUS_OK]
    summary = RunSummary(
        title="preprocess",
        done=int(((index["status"] == STATUS_OK) & ~index["cached"]).sum()),
        skipped=int(((index["status"] == STATUS_OK) & index["cached"]).sum()),
        failed=[(r.sequence_id, f"{r.status}: {r.reason}") for r in failed.itertuples()],
        seconds=time.perf_counter() - start,
    )
    computed = index[~index["cached"]]
    frames = int(computed["n_frames"].sum())
    summary.extra["frames processed"] = frames
    if frames and summary.seconds > 0:
        summary.extra["throughput"] = f"{frames / summary.seconds:.0f} frames/s (wall, including start-up)"
    summary.extra["outputs"] = str(out_dir)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary.as_dict(), indent=2))
    return summary
