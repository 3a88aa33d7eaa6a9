"""`seqfer cv`: subject-independent k-fold cross-validation of the configured model, folds in parallel on Ray actors.

Honest by construction: each fold's test subjects are never seen in training or validation; the epoch is chosen
on a validation split of the TRAINING subjects; a sequence that failed preprocessing is reported as excluded,
not silently dropped. A finished fold is not re-run (its ``result.json`` carries the hash of the config that
produced it). A dataset with its own split (FER2013) is refused with one ``error:`` line naming `seqfer train`
and `seqfer evaluate ... --split test` (:func:`~pipeline.data.labelled.refuse_own_split`), before preprocessing.

Run folder ``OUTPUT_DIR/cv/``: ``config.yaml``, ``environment.json``, ``summary.json``, ``summary.md``,
``predictions.csv``, ``confusion.csv`` + ``.png``, ``curves.csv`` + ``.png``, ``splits.csv``, ``excluded.csv`` and
``fold_K/`` with ``model.safetensors`` (+ its JSON config/classes; ``model.K.safetensors`` for the other members
of a ``train.ensemble``), ``history.csv``, ``result.json``.

One fold's training: :mod:`pipeline.cv.folds`; the run folder's reports: :mod:`pipeline.cv.reports`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from pathlib import Path

from pipeline.config import Config, to_yaml
from pipeline.cv.folds import FOLD_ERRORS, FoldWorker, read_fold_result
from pipeline.cv.reports import write_cv_report
from pipeline.data.labelled import LabelledData, load_labelled_data, refuse_own_split
from pipeline.model_folder.folder import versions
from pipeline.model_folder.init import init_identity, pin_init
from pipeline.preprocess.to_stages import sequence_config
from pipeline.runtime.failures import NoWorkers, root_cause
from pipeline.runtime.output_folder import claim_folder
from pipeline.runtime.progress import progress_bar
from pipeline.runtime.ray_pool import stream_to_actors
from pipeline.runtime.ray_start import ensure_ray
from pipeline.runtime.run_key import data_identity, run_key
from pipeline.runtime.workers import worker_count
from stages.atomic_io import atomic_write_text
from stages.errors import StageError
from stages.preprocess.cache import stable_hash

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cv_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "cv"


def config_hash_of(cfg: Config) -> str:
    """Hash of everything a fold's result depends on (the weights ``model.appearance.init`` names included); a
    finished fold with another hash is re-run."""
    return stable_hash(
        cfg.seed,
        cfg.model,
        cfg.train,
        cfg.train.val_fraction,
        sequence_config(cfg),
        cfg.data.folds,
        cfg.fold_seed,
        str(cfg.data.fold_file),
        init_identity(cfg.model),
    )


def _fold_stream(
    cfg: Config, data: LabelledData, todo: list[int], device: str, out: str, config_hash: str, use_ray: bool
) -> Generator[tuple[int, dict | BaseException], None, None]:
    """THE fold executor: (fold, result of :func:`train_fold`) as folds finish. ``use_ray=False``: one after
    another in this process; otherwise on ``cv.parallel`` (default ``ray.workers``) Ray actors through
    :func:`~pipeline.runtime.ray_pool.stream_to_actors`, so folds get its fault handling (a dead worker's fold is
    retried, a worker that cannot be scheduled within ``ray.start_timeout`` is dropped; no time limit per fold).
    A fold that raised comes back as its exception (from Ray wrapped: :func:`fold_error` unwraps it)."""
    args = (
        pin_init(cfg.model).model_dump(mode="json"),
        cfg.train.model_dump(mode="json"),
        cfg.train.val_fraction,
        cfg.seed,
        device,
    )
    if not use_ray:
        worker = FoldWorker(data, args, out, config_hash)
        return ((fold, worker.train(fold)) for fold in todo)
    import ray

    ensure_ray(cfg.ray)
    parallel = worker_count(cfg.ray, cfg.cv.parallel or cfg.ray.workers)
    worker_cls = ray.remote(num_cpus=1, num_gpus=1 / parallel if device == "cuda" else 0)(FoldWorker)
    data_ref = ray.put(data)
    return stream_to_actors(
        lambda: worker_cls.remote(data_ref, args, out, config_hash),
        min(parallel, len(todo)),
        todo,
        lambda actor, fold: actor.train.remote(fold),
        per_actor=1,
        item_timeout=None,
        start_timeout=cfg.ray.start_timeout,
    )


def run_cv(cfg: Config, data: LabelledData | None = None, use_ray: bool = True) -> dict:
    """Run the configured folds (resuming finished ones) and write the run folder. Returns summary.json.

    ``use_ray=False`` trains the folds one after another in this process (same results; for a single GPU
    machine or where Ray is unavailable).
    """
    start = time.perf_counter()
    if cfg.train.workers > 1:
        log.warning(f"train.workers: {cfg.train.workers} is for `seqfer train`; cv trains one fold per Ray worker")
    data = data if data is not None else load_labelled_data(cfg, refuse_split="cv")
    if data.splits is not None:  # a dataset with its own split: train, then evaluate its test split once
        raise refuse_own_split(cfg, "cv")
    out = claim_folder(cv_dir(cfg), "cv", legacy=("config.yaml", "environment.json"))
    atomic_write_text(out / "config.yaml", to_yaml(cfg))
    device = resolve_device(cfg.cv.device)
    _write_environment(out / "environment.json", device)
    config_hash = run_key("cv-fold", config_hash_of(cfg), data_identity(data))
    all_folds = sorted(set(data.folds.tolist()))
    folds = all_folds if cfg.cv.run_folds is None else [f for f in cfg.cv.run_folds if f in all_folds]

    results: dict[int, dict] = {}
    todo = []
    for fold in folds:
        previous = read_fold_result(out / f"fold_{fold}" / "result.json")
        if previous is not None and previous.get("config_hash") == config_hash:
            results[fold] = previous
        else:
            todo.append(fold)
    if results:
        log.info(f"cv: {len(results)} fold(s) already finished with this config and data, not re-run")

    if todo:
        stream = _fold_stream(cfg, data, todo, device, str(out), config_hash, use_ray)
        bar = progress_bar(len(todo), "cv folds", unit="fold")
        try:
            for fold, result in stream:
                if isinstance(result, BaseException):  # a fold that failed fails the run, as it would in-process
                    raise fold_error(fold, result) from None
                results[fold] = result
                bar.update(1)
                bar.set_postfix_str(f"fold {fold} acc {result['accuracy']:.3f}")
        finally:
            stream.close()  # stops the folds still running (finished folds are on disk and resume)
            bar.close()

    summary = write_cv_report(cfg, data, [results[f] for f in folds], out, time.perf_counter() - start, device)
    log.info((out / "summary.md").read_text())
    return summary


def fold_error(fold: int, error: BaseException) -> BaseException:
    """What a failed fold raises in the caller: the user error it raised (e.g. a
    :class:`~stages.learning.training.divergence.TrainingDiverged` naming the fold and epoch, an ``OSError``) as
    itself, so the CLI prints its one ``error:`` line (also when it comes wrapped in Ray's error, whose text is
    the remote traceback); :class:`NoWorkers` as a :class:`StageError` naming the fold; anything else (a bug, a
    lost worker) unchanged."""
    if isinstance(error, NoWorkers):
        return StageError(f"cv fold {fold}: {error}")
    cause = root_cause(error)  # the one unwrapping of Ray's task errors (pipeline/runtime/failures.py)
    return cause if isinstance(cause, FOLD_ERRORS) else error


def _write_environment(path: Path, device: str) -> None:
    import ray
    import torch

    env = {
        **versions(),
        "ray": ray.__version__,
        "device": device,
        "cuda_device": torch.cuda.get_device_name(0) if device == "cuda" else None,
    }
    atomic_write_text(path, json.dumps(env, indent=2))
