"""`seqfer preprocess`: every manifest sequence through the stages, on Ray, into the cache and the run folder.

Outputs under ``OUTPUT_DIR/preprocess/``:
- ``index.parquet``: one row per sequence (status, reason, frames, face ratio, cache keys) -- what training reads;
- ``failures.csv``: every failed sequence and every frame without a face, with the reason;
- ``landmarks/part-*.parquet``: per-frame landmark tables in OpenFace's columns, many sequences to a file, each
  sequence once (:mod:`stages.preprocess.landmark_store`; read one with ``landmark_tables(cfg).read(sequence_id)``
  or ``pd.read_parquet(folder, filters=[("sequence_id", "==", sid)])``); with ``preprocess.export_csv`` a CSV
  copy of each part in ``landmarks_csv/``;
- ``summary.json``: done / skipped / failed counts, timing, and where the time went: ``stage_seconds`` (decode,
  detect, track, align, trajectory, cache_read, cache_write, table_write, other, and ``waiting_on_ray``: worker
  time not spent on a sequence, i.e. actor start-up and idle gaps), summed over workers; ``driver_seconds``
  (start-up before preprocessing began, manifest and cache lookup, Ray start, dispatch, ``first_result``:
  process start to the first finished sequence, and the workers' summed busy wall and CPU seconds: CPU well
  below busy means the workers waited for a core, i.e. the machine was shared);
  ``peak_rss_mb`` of the driver and of each worker.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from pipeline.config import Config
from pipeline.data.manifest import prepare_manifest
from pipeline.preprocess.dispatch import Tally, first_result_time, make_batches, run_batches, tally_batches
from pipeline.preprocess.to_stages import sequence_config, sources_from_manifest
from pipeline.preprocess.worker import PreprocessWorker, no_face_frames, outcome_row, peak_rss_mb
from pipeline.runtime.failures import ENVIRONMENT
from pipeline.runtime.interrupt import Interrupted, StopFlag, stop_on_signals
from pipeline.runtime.output_folder import claim_folder
from pipeline.runtime.progress import RunSummary, progress_bar
from pipeline.runtime.ray_start import ensure_ray, landmark_worker_options
from pipeline.runtime.workers import worker_count
from stages.atomic_io import atomic_path, atomic_write_text
from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmark_store import LandmarkTables
from stages.preprocess.sequence import SequenceConfig, SequenceProcessor, warm_up
from stages.record import SequenceStatus

log = logging.getLogger(__name__)

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


def landmark_tables(cfg: Config) -> LandmarkTables:
    """The landmark tables a run of ``cfg`` wrote: ``landmark_tables(cfg).read(sequence_id)`` is one sequence's
    table (OpenFace's columns, one row per frame)."""
    return LandmarkTables(preprocess_dir(cfg) / "landmarks")


def run_preprocess(cfg: Config, force: bool = False, manifest: pd.DataFrame | None = None) -> RunSummary:
    """Preprocess every sequence of the manifest; skip what is cached (unless ``force``). Returns the summary."""
    start = time.perf_counter()
    driver = {"startup": _seconds_since_process_start()}
    ray_started = False
    if manifest is not None:
        df = manifest
    elif _expects_work(cfg, force):
        # Scan the dataset while Ray starts: the scan (and sklearn's import for the folds) is over a second of
        # a small job, and ray.init mostly waits for its own processes. A scan error still ends the run.
        # In a forked helper, the models' on-disk caches are filled at the same time (once, not in every worker).
        pool, forked = _scan_pool()
        try:
            scan = pool.submit(prepare_manifest, cfg)
            if forked:
                pool.submit(warm_up, sequence_config(cfg))
            t0 = time.perf_counter()
            ensure_ray(cfg.ray)
            driver["ray_start"], ray_started = time.perf_counter() - t0, True
            df = scan.result()[0]
        finally:
            pool.shutdown(wait=False)  # the warm-up may still run: the workers wait for what they need of it
    else:
        df = prepare_manifest(cfg)[0]
    out_dir = claim_folder(preprocess_dir(cfg), "preprocess", legacy=("landmarks",))
    tables = landmark_tables(cfg)
    tables.folder.mkdir(parents=True, exist_ok=True)
    seq_cfg = sequence_config(cfg)
    local = SequenceProcessor(seq_cfg, cfg.cache_dir)

    rows: dict[str, dict] = {}
    todo: list[SequenceSource] = []
    for source in sources_from_manifest(df):
        cached = None if force else local.lookup(source)
        if cached is not None and tables.key_of(source.sequence_id) == cached.keys["landmarks"]:
            # done: cached, and its table is from the same landmarks; its frames without a face come from the
            # cache, so failures.csv lists them on every run
            rows[source.sequence_id] = {**outcome_row(cached), "seconds": 0.0, "no_face_frames": no_face_frames(cached)}
        else:
            todo.append(source)
    driver["manifest"] = time.perf_counter() - start

    tally = Tally(rows)
    if todo and not ray_started:
        t0 = time.perf_counter()
        ensure_ray(cfg.ray)  # first: ray.init installs signal handlers of its own, which ours must replace
        driver["ray_start"] = time.perf_counter() - t0
    csv_dir = tables.folder.parent / "landmarks_csv" if cfg.preprocess.export_csv else None
    with stop_on_signals() as stop_flag:  # SIGTERM / Ctrl-C: stop after the bookkeeping, exit 143 / 130
        try:
            _process_todo(cfg, todo, tally, seq_cfg, tables, csv_dir, force, stop_flag, driver, start)
        finally:
            tables.drop_stale(csv_dir)  # each sequence in one part, also after a signal
    index = pd.DataFrame(  # rows of what is done: all of them unless a signal stopped the run
        [rows[s] for s in df["sequence_id"] if s in rows],
        columns=[*INDEX_COLUMNS, "seconds", "no_face_frames", "failure_kind"],
    )
    summary = _write_outputs(cfg, df, index, start, tally.stages, driver, tally.workers_rss)
    if stop_flag.is_set():
        left = len(df) - len(index)
        summary.extra["interrupted"] = f"{left} sequence(s) not processed; run the same command again to resume"
        atomic_write_text(out_dir / "summary.json", json.dumps(summary.as_dict(), indent=2))
        log.info(summary.text())
        raise Interrupted(
            stop_flag.signum,
            f"preprocess stopped by signal {stop_flag.signum}: {len(index)} of "
            f"{len(df)} sequences done and indexed in {out_dir}; run the same command to resume",
        )
    log.info(summary.text())
    return summary


def _scan_pool() -> tuple[Executor, bool]:
    """(executor, forked): where the manifest scan runs while Ray starts. Two forked processes on Linux when no
    Ray runs in this process yet (so no Ray thread exists to be forked), else one thread. In a thread, the scan's
    Python work and sklearn's import hold the GIL that ray.init's own Python needs: ray.init took 4.0-4.4 s instead
    of 2.6 s beside a thread importing sklearn.model_selection. The second process is for the warm-up."""
    ray = sys.modules.get("ray")
    if sys.platform.startswith("linux") and not (ray is not None and ray.is_initialized()):
        return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")), True
    return ThreadPoolExecutor(1, thread_name_prefix="manifest"), False


def _expects_work(cfg: Config, force: bool) -> bool:
    """Whether this run will almost surely need workers: forced, or no index from an earlier run. Demo data is
    excluded: generating it starts processes of its own, which should not fork while Ray starts."""
    if cfg.data.format == "demo":
        return False
    return force or not (preprocess_dir(cfg) / "index.parquet").is_file()


def _process_todo(
    cfg: Config,
    todo: list[SequenceSource],
    tally: Tally,
    seq_cfg: SequenceConfig,
    tables: LandmarkTables,
    csv_dir: Path | None,
    force: bool,
    stop_flag: StopFlag,
    driver: dict[str, float],
    start: float,
) -> None:
    """Run ``todo`` on Ray workers in batches (:mod:`pipeline.preprocess.dispatch`), into ``tally``, their landmark
    tables into new parts of ``tables`` (CSV copies in ``csv_dir``); returns early when ``stop_flag`` is set."""
    if not todo:
        return
    import ray

    t0 = time.perf_counter()
    n_workers = min(worker_count(cfg.ray), len(todo))
    worker_cls = ray.remote(**landmark_worker_options(cfg.ray))(PreprocessWorker)
    worker_args = (seq_cfg.model_dump(mode="json"), str(cfg.cache_dir), str(tables.folder), csv_dir and str(csv_dir))
    batches = make_batches(todo, n_workers, tables.next_run())
    bar = progress_bar(len(todo), "preprocess")

    def on_rows(rows: list[dict]) -> None:
        first_result_time(driver, start)
        bar.update(len(rows))
        if any(row["status"] != SequenceStatus.OK for row in rows):
            failed = sum(r["status"] != SequenceStatus.OK for r in tally.rows.values())
            bar.set_postfix_str(f"failed {failed}", refresh=False)

    try:
        stream = run_batches(
            lambda: worker_cls.remote(*worker_args),
            n_workers,
            batches,
            force,
            cfg.ray.item_timeout,
            cfg.ray.start_timeout,
            stop_flag.is_set,
        )
        tally_batches(stream, tally, on_rows)
    finally:
        bar.close()
    driver["dispatch"] = time.perf_counter() - t0
    tally.stages["waiting_on_ray"] = max(0.0, n_workers * driver["dispatch"] - tally.busy)
    driver["worker_busy"], driver["worker_cpu"] = tally.busy, tally.cpu


def _seconds_since_process_start() -> float:
    """Seconds from this process's start to now (interpreter, imports, config, CLI parsing); 0 where the system
    does not say (read from Linux's /proc)."""
    try:
        ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


STAGE_ORDER = (
    "decode",
    "detect",
    "track",
    "align",
    "trajectory",
    "cache_read",
    "cache_write",
    "table_write",
    "other",
    "waiting_on_ray",
)


def _breakdown(stages: dict[str, float]) -> str:
    total = sum(stages.values())
    if total <= 0:
        return ""
    names = [n for n in STAGE_ORDER if n in stages] + sorted(set(stages) - set(STAGE_ORDER))
    return ", ".join(f"{n.replace('_', ' ')} {stages[n]:.1f} s ({100 * stages[n] / total:.0f}%)" for n in names)


def _write_outputs(
    cfg: Config,
    df: pd.DataFrame,
    index: pd.DataFrame,
    start: float,
    stages: dict[str, float],
    driver: dict[str, float],
    workers_rss: dict[str, float],
) -> RunSummary:
    out_dir = preprocess_dir(cfg)
    with atomic_path(out_dir / "index.parquet") as tmp:
        index[INDEX_COLUMNS].to_parquet(tmp, index=False)

    sources = dict(zip(df["sequence_id"], df["video_path"].fillna(""), strict=True))
    failures = []
    for row in index.itertuples():
        if row.status != SequenceStatus.OK:
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
                    "status": SequenceStatus.NO_FACE_FRAME,
                    "reason": "no face found in this frame",
                }
            )
    with atomic_path(out_dir / "failures.csv") as tmp:
        pd.DataFrame(failures, columns=["sequence_id", "frame", "source", "status", "reason"]).to_csv(tmp, index=False)

    failed = index[index["status"] != SequenceStatus.OK]
    cached = index["cached"].astype(bool)  # bool even when no row is done: an object mask would select columns
    summary = RunSummary(
        title="preprocess",
        done=int(((index["status"] == SequenceStatus.OK) & ~cached).sum()),
        skipped=int(((index["status"] == SequenceStatus.OK) & cached).sum()),
        failed=[(r.sequence_id, f"{r.status}: {r.reason}") for r in failed.itertuples()],
        seconds=time.perf_counter() - start,
        environment_failed=[r.sequence_id for r in failed.itertuples() if r.failure_kind == ENVIRONMENT],
    )
    computed = index[~cached]
    frames = int(computed["n_frames"].sum())
    summary.extra["frames processed"] = frames
    if frames and summary.seconds > 0:
        summary.extra["throughput"] = f"{frames / summary.seconds:.0f} frames/s (wall, including start-up)"
    if stages:
        summary.extra["time by stage (summed over workers)"] = _breakdown(stages)
    summary.extra["driver"] = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in driver.items())
    rss = [f"driver {peak_rss_mb():.0f}"] + [f"{v:.0f}" for v in workers_rss.values()]
    summary.extra["peak RSS (MiB)"] = ", workers ".join([rss[0], " / ".join(rss[1:])]) if workers_rss else rss[0]
    summary.extra["outputs"] = str(out_dir)
    summary.details = {
        "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
        "driver_seconds": {k: round(v, 3) for k, v in driver.items()},
        "peak_rss_mb": {"driver": round(peak_rss_mb(), 1), "workers": {k: round(v, 1) for k, v in workers_rss.items()}},
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary.as_dict(), indent=2))
    return summary
