"""One ensemble member's training as a Ray Train ``TorchTrainer`` over ``train.workers`` data-parallel workers.

Every worker runs THE training path (:func:`~stages.learning.training.member.train_member`) with the same arguments
and its :class:`~stages.learning.training.loop.Shard` (rank, world size): each computes its slice of every global
batch, DDP averages the gradients (gloo on CPUs, NCCL on GPUs: Ray's ``TorchConfig`` default), and after each epoch
every worker holds rank 0's network. Checkpoints go through Ray Train: after each epoch every worker writes its
whole training state (:mod:`stages.learning.training.state`'s file, one per rank: ``rank<R>.pt``) and reports it with
``ray.train.report``; Ray merges them into one checkpoint under ``<storage>/<run name>/``. A worker (re)started by
Ray Train (``FailureConfig``: a lost worker or node) restores its file from ``ray.train.get_checkpoint()`` and goes on
after the last reported epoch; a `seqfer train` run again with the same folder resumes the same way. The driver
gets the best epoch's weights and the history from the last checkpoint's ``result.pt`` (written by rank 0).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.runtime.failures import failure_reason
from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.learning.models import ModelConfig, TrainConfig, build_model
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.divergence import TrainingDiverged
from stages.learning.training.fit import FitResult
from stages.learning.training.state import Resume

log = logging.getLogger(__name__)

MAX_FAILURES = 3
"""Worker-group failures (a lost worker or node) Ray Train recovers from, each time from the last epoch."""

RESULT_FILE = "result.pt"
"""The trained network (best epoch) and its facts, written by rank 0 into the last checkpoint."""

WorkerHook = Callable[[int, dict], None]
"""Called in every worker after each epoch's checkpoint is reported, with (rank, history row): for tests."""


def rank_state_file(rank: int) -> str:
    """File name of worker ``rank``'s training state inside a checkpoint."""
    return f"rank{rank}.pt"


def run_name(member: int, workers: int, key: str) -> str:
    """The Ray Train run's folder name under the storage folder: member, worker count and resume key, so that a
    run with other data, settings or worker count never resumes from it."""
    return f"member{member}-w{workers}-{key.replace(':', '-')}"


def train_member_on_ray(
    model_cfg: ModelConfig,
    n_classes: int,
    train: ArrayDataset,
    val: ArrayDataset | None,
    train_cfg: TrainConfig,
    member_args: dict[str, Any],
    device: str,
    storage: Path,
    key: str,
    hook: WorkerHook | None = None,
) -> FitResult:
    """Train one ensemble member on ``train_cfg.workers`` Ray Train workers of the running Ray cluster (the caller
    starts or joins it) and return what :func:`~stages.learning.training.member.train_member` returns, the network
    on the CPU. ``member_args``: train_member's ``seed``, ``member``, ``fold``, ``where`` and ``appearance_init``.
    ``storage``: the folder Ray Train keeps checkpoints in (absolute; on storage every node sees); ``key``: the
    caller's resume key of this member's data and settings. :class:`StageError` before starting when the cluster
    cannot hold the workers, or the batch or data is too small to give each worker two rows; a training that
    diverges raises :class:`TrainingDiverged` as in one process. Deterministic for a seed and worker count."""
    import ray.train
    from ray.train.torch import TorchTrainer

    workers = train_cfg.workers
    _check_sizes(train_cfg, len(train))
    check_capacity(workers, train_cfg.threads, device == "cuda")
    config = {
        "model_cfg": model_cfg.model_dump(mode="json"),
        "train_cfg": {**train_cfg.model_dump(mode="json"), "workers": workers},
        "n_classes": n_classes,
        "data": ray.put((train, val)),
        "member_args": member_args,
        "device": device,
        "key": key,
        "hook": hook,
    }
    resources = {"CPU": float(train_cfg.threads), **({"GPU": 1.0} if device == "cuda" else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=device == "cuda", resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name(int(member_args["member"]), workers, key),
            storage_path=str(Path(storage).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # seqfer's own lines say the progress
        ),
    )
    log.info(f"train: {workers} data-parallel workers on Ray Train ({'NCCL' if device == 'cuda' else 'gloo'})")
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise StageError(
            f"training on Ray Train failed ({MAX_FAILURES} restarts allowed): {failure_reason(exc)}"
        ) from exc
    return _fit_result(result, model_cfg, n_classes, train)


def check_capacity(workers: int, cpus: int, gpu: bool) -> None:
    """:class:`StageError` unless the Ray cluster's live nodes can hold ``workers`` workers of ``cpus`` CPUs (and
    one GPU each with ``gpu``) at once: Ray Train would otherwise wait for them for ever."""
    import ray

    fits, total_cpus = 0, 0.0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        total_cpus += res.get("CPU", 0.0)
        n = int(res.get("CPU", 0.0) // cpus)
        fits += min(n, int(res.get("GPU", 0.0))) if gpu else n
    if fits < workers:
        need = f"{cpus} CPU(s){' and 1 GPU' if gpu else ''} each"
        raise StageError(
            f"train.workers {workers} ({need}) do not fit on the Ray cluster ({total_cpus:g} CPUs on its nodes): "
            "lower train.workers or train.threads, add nodes (ray.address), or raise ray.workers for a local run"
        )


def _check_sizes(cfg: TrainConfig, n_train: int) -> None:
    """:class:`StageError` unless every worker gets at least two rows of every batch (BatchNorm needs two)."""
    need = 2 * cfg.workers
    if cfg.batch_size < need or n_train < need:
        raise StageError(
            f"train.workers {cfg.workers} needs train.batch_size and the training sequences to be at least {need} "
            f"(two per worker); got batch size {cfg.batch_size}, {n_train} sequences"
        )


def restore_worker_state(checkpoint: Any, rank: int, dest: Path) -> bool:
    """Copy worker ``rank``'s training state out of a Ray Train ``checkpoint`` (None: nothing) to ``dest``, where
    :func:`~stages.learning.training.fit.fit` resumes from it; True when there was one."""
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        src = Path(folder) / rank_state_file(rank)
        if not src.is_file():
            return False
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return True


def epoch_line(row: dict, epochs: int, where: str = "") -> str:
    """The progress line of one epoch of a data-parallel training (a history row of
    :func:`~stages.learning.training.fit.fit`): ``train: [where: ]epoch E/N, train loss L, val acc A, val loss V``
    (``where``: :func:`~stages.learning.training.member.network_name`'s "member 2/3", or "")."""
    return (
        f"train: {where + ': ' if where else ''}epoch {row['epoch']}/{epochs}, train loss {row['train_loss']:.3f}, "
        f"val acc {row['val_acc']:.3f}, val loss {row['val_loss']:.3f}"
    )


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: restore its state from the last checkpoint, train its shard through train_member,
    report a checkpoint after every epoch and, from rank 0, the result after the last."""
    import ray
    import ray.train

    from stages.learning.training.loop import Shard
    from stages.learning.training.member import train_member

    _quiet_worker()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = config["device"]
    if device == "cuda":
        from ray.train.torch import get_device

        torch.cuda.set_device(get_device())
    train, val = ray.get(config["data"])
    local = Path(tempfile.mkdtemp(prefix="seqfer-train-"))
    try:
        state = local / rank_state_file(rank)
        restore_worker_state(ray.train.get_checkpoint(), rank, state)
        hook = config["hook"]

        epochs = int(config["train_cfg"]["epochs"])
        where = str(config["member_args"].get("where") or "")

        def on_epoch(row: dict) -> None:
            checkpoint = ray.train.Checkpoint.from_directory(str(local))
            ray.train.report(dict(row), checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)
            if rank == 0:  # one line per epoch, shown on the driver's console through Ray's log forwarding
                log.info(epoch_line(row, epochs, where))
            if hook is not None:
                hook(rank, row)

        try:
            result = train_member(
                ModelConfig.model_validate(config["model_cfg"]),
                config["n_classes"],
                train,
                val,
                TrainConfig.model_validate(config["train_cfg"]),
                device=device,
                on_epoch=on_epoch,
                resume=Resume(state, config["key"], 0.0),
                shard=Shard(rank, world),
                **config["member_args"],
            )
        except StageError as exc:  # the same on every worker (they agree on every loss): no retry can help
            ray.train.report({"error": str(exc), "diverged": isinstance(exc, TrainingDiverged)})
            return
        if rank == 0:
            _save_result(local / RESULT_FILE, result)
        ray.train.report({"done": True}, checkpoint=ray.train.Checkpoint.from_directory(str(local)))
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _quiet_worker() -> None:
    """Keep a worker's console to seqfer's epoch lines: Ray Train's per-report INFO line (its logger is named by
    its file's path, so ``LoggingConfig`` does not reach it) and torch's note on the read-only arrays that
    ``ray.get`` returns (the training never writes to its inputs) are dropped."""
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _save_result(path: Path, result: FitResult) -> None:
    """Write the trained network's weights (on the CPU) and its facts, loadable with ``weights_only``."""
    facts = {
        "model": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "history": result.history,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "pretrain_history": result.pretrain_history,
        "precision": result.precision,
    }
    with atomic_path(path) as tmp:
        torch.save(facts, tmp)


def _fit_result(result: Any, model_cfg: ModelConfig, n_classes: int, train: ArrayDataset) -> FitResult:
    """The driver's :class:`FitResult` from a finished Ray Train ``result``: the network rebuilt on the CPU with
    the weights of the last checkpoint's ``result.pt``; a training error reported by the workers re-raised."""
    error = (result.metrics or {}).get("error")
    if error is not None:
        raise (TrainingDiverged if result.metrics.get("diverged") else StageError)(error)
    if result.checkpoint is None:
        raise StageError("training on Ray Train finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        facts = torch.load(Path(folder) / RESULT_FILE, map_location="cpu", weights_only=True)
    model = build_model(model_cfg, n_classes, int(train.appearance.shape[1]), int(train.trajectory.shape[1]))
    model.load_state_dict(facts["model"])
    model.eval()
    return FitResult(
        model=model,
        history=list(facts["history"]),
        best_epoch=int(facts["best_epoch"]),
        seconds=float(facts["seconds"]),
        pretrain_history=list(facts["pretrain_history"]),
        precision=str(facts["precision"]),
    )
