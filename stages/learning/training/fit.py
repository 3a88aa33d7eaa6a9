"""The expression training of one network: the epoch loop, early stopping and best-epoch choice on validation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from stages.errors import StageError
from stages.learning.augment import augment_batch
from stages.learning.models import ModelConfig, TrainConfig, TwoStream, build_model
from stages.learning.training.averaging import ema_warmup_avg_fn
from stages.learning.training.dataset import ArrayDataset, appearance_float, check_data, stream_inputs, to_device
from stages.learning.training.divergence import (
    EXPLODED_LOSS,
    LossDiverged,
    diverged,
    loss_diverged,
    require_finite_weights,
)
from stages.learning.training.loop import Shard, class_weight, evaluate, train_epoch
from stages.learning.training.precision import resolve_precision
from stages.learning.training.pretrain import pretrain_streams
from stages.learning.training.state import Resume, StateSaver, TrainingRun
from stages.learning.training.warm_start import AppearanceInit, apply_appearance_init

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(appearance, trajectory, labels) of one split on the training device; appearance as held (uint8 grey levels or
float32: :func:`~stages.learning.training.dataset.to_device`), made float per batch."""


@dataclass
class FitResult:
    """Result of :func:`fit`.

    ``model``: the best epoch's weights, eval mode. ``history``: one dict per epoch run with keys epoch
    (1-based), train_loss, train_acc (on augmented batches), val_loss, val_acc, lr (used in that epoch),
    seconds, and fusion_weight for fused models. ``best_epoch``: the 1-based epoch ``model`` holds.
    ``seconds``: wall time of the whole fit. ``pretrain_history``: one row per first-stage epoch of a
    network that has one (stream, epoch, loss, seconds; see :func:`~stages.learning.training.pretrain.pretrain`).
    ``precision``: the arithmetic the training forward passes used (``TrainConfig.precision`` resolved by
    :func:`~stages.learning.training.precision.resolve_precision`)."""

    model: TwoStream
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    pretrain_history: list[dict[str, float]] = field(default_factory=list)
    precision: str = "float32"


def fit(
    model_cfg: ModelConfig,
    n_classes: int,
    train: ArrayDataset,
    val: ArrayDataset | None,
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
    resume_path: Path | None = None,
    resume_key: str = "",
    save_every_s: float = 0.0,
    where: str = "",
    appearance_init: AppearanceInit | None = None,
    shard: Shard | None = None,
) -> FitResult:
    """Train a model from scratch and return the weights of the best VALIDATION epoch.

    Each epoch: shuffled batches of ``train`` (augmented), then ``val`` in eval mode. The best epoch has the
    highest validation accuracy, ties going to the lower validation loss (the training objective: joint and
    class-weighted as configured); training stops after ``cfg.patience`` epochs without a better one. With an
    empty or absent ``val`` there is no early stopping and the last epoch is kept (val_loss / val_acc are NaN).
    The test fold must never be passed as ``val``. Before it, a stream network with a first training stage
    (fn2en) gets it through :func:`~stages.learning.training.pretrain.pretrain`; both stages share one batch loop.
    ``seed`` fixes weight init, shuffling, dropout and augmentation (same seed -> same history and weights on
    CPU); ``torch.set_num_threads(cfg.threads)`` holds during the call. ``appearance_init``: weights the appearance
    stream starts from (``model.appearance.init``, read by the caller) instead of its seeded initialisation.
    ``on_epoch`` receives each history row
    as it is produced.
    ``resume_path``: after every epoch the whole training state (model, optimizer, scheduler, epoch, history,
    best-so-far, every random generator) is saved there, as torchvision's reference train.py does; a call with
    a state file whose ``resume_key`` matches (the caller's key of this data and these settings) continues after
    its last epoch, with the result an uninterrupted run gives. A state file with another key is ignored.
    ``save_every_s`` > 0 writes the state only once that many seconds have passed since the last write (and after
    the final epoch): a killed run then repeats at most that much work, and short epochs do not pay ~30 ms each
    for the write.
    A training batch loss or a validation loss that is NaN, infinite or above
    :data:`~stages.learning.training.divergence.EXPLODED_LOSS` stops the training at once with a
    :class:`~stages.learning.training.divergence.TrainingDiverged` (a :class:`StageError`) naming ``where`` (the
    network: "fold 3", "fold 3, member 2/3"; "" for the only one), the epoch and the value; so do non-finite final
    weights. The checks read only values the loop computes anyway: finite training is unchanged.
    ``shard``: this process's share of data-parallel training (:class:`~stages.learning.training.loop.Shard`; every
    process of the group calls ``fit`` with the same arguments): the expression stage's batches are split over the
    processes (a first training stage runs whole in each, rank 0's result kept), after each epoch every process
    takes rank 0's weights and validation figures, so all of them judge, stop, save and return the same network;
    ``resume_path`` should then be one file per process. None (the default): one process, as always.
    """
    if len(train) < 2:
        raise StageError(f"training needs at least 2 sequences; got {len(train)}")
    check_data("train", train, n_classes, model_cfg)
    has_val = val is not None and len(val) > 0
    if has_val:
        check_data("validation", val, n_classes, model_cfg)
    resume = None if resume_path is None else Resume(Path(resume_path), resume_key, save_every_s)
    with _torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
        start = time.perf_counter()
        seeded = _seeded_model(model_cfg, n_classes, train, seed, appearance_init)
        trainer = _Trainer.build(seeded, train, val if has_val else None, cfg, seed, device, where, shard)
        saver = StateSaver(resume, since=start)
        run = trainer.run
        for epoch in range(saver.restore(run, cfg.epochs), cfg.epochs + 1):
            row = trainer.epoch(epoch)
            run.history.append(row)
            stop = run.best.update(trainer.selection_key(row), epoch, run.kept, cfg.patience)
            saver.after_epoch(run, epoch, stop, final=stop or epoch == cfg.epochs)
            if on_epoch is not None:
                on_epoch(dict(row))
            if stop:
                break
        return trainer.result(time.perf_counter() - start)


Seeded = tuple[TwoStream, torch.Generator, np.random.Generator]
"""(network, augmentation generator, shuffling generator) of one seed: :func:`_seeded_model`."""


def _seeded_model(
    model_cfg: ModelConfig, n_classes: int, train: ArrayDataset, seed: int, init: AppearanceInit | None = None
) -> Seeded:
    """The network initialised from ``seed`` (through torch's global generator, which dropout then draws from; its
    appearance stream then overwritten by ``init`` when given), and the augmentation and batch-shuffling generators
    of the same seed."""
    init_seed, aug_seed, shuffle_seed = np.random.SeedSequence(seed).generate_state(3).tolist()
    torch.manual_seed(init_seed)
    aug_gen = torch.Generator().manual_seed(aug_seed)
    rng = np.random.default_rng(shuffle_seed)
    model = build_model(model_cfg, n_classes, int(train.appearance.shape[1]), int(train.trajectory.shape[1]))
    if init is not None:
        apply_appearance_init(model, init)
    return model, aug_gen, rng


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block, the previous count restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class _Trainer:
    """One :func:`fit` call's network, optimisation objects and data on the device."""

    run: TrainingRun
    cfg: TrainConfig
    device: str
    precision: str
    weight: torch.Tensor | None
    train: Tensors
    val: Tensors | None
    pretrain_history: list[dict[str, float]]
    where: str = ""
    shard: Shard | None = None
    net: torch.nn.Module | None = None
    """The training forward pass's wrapper of ``run.model`` (``DistributedDataParallel``) under a shard."""

    @classmethod
    def build(
        cls,
        seeded: Seeded,
        train: ArrayDataset,
        val: ArrayDataset | None,
        cfg: TrainConfig,
        seed: int,
        device: str,
        where: str = "",
        shard: Shard | None = None,
    ) -> _Trainer:
        """Run the seeded network's first training stage, set up AdamW, the schedule and the average (and under
        a ``shard`` the data-parallel wrapper, made after the average so that it copies the bare network)."""
        model, aug_gen, rng = seeded
        model.to(device)
        tensors = _split_tensors(train, device)
        pretrain_history = pretrain_streams(model, *tensors[:2], train.targets, cfg, seed, device, where)
        precision = resolve_precision(cfg.precision, device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = None
        if cfg.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
        n_classes = int(model.build_args["n_classes"])
        weight = class_weight(train.labels, n_classes, device) if cfg.class_weighted else None
        ema = None
        if cfg.ema_decay > 0:
            ema = AveragedModel(model, multi_avg_fn=ema_warmup_avg_fn(cfg.ema_decay), use_buffers=True)
        run = TrainingRun(model, ema, opt, sched, aug_gen, rng)
        val_tensors = None if val is None else _split_tensors(val, device)
        net = None if shard is None else shard.wrap(model)
        return cls(run, cfg, device, precision, weight, tensors, val_tensors, pretrain_history, where, shard, net)

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (augmented shuffled batches), step the schedule, validate; returns its history row.
        :class:`~stages.learning.training.divergence.TrainingDiverged` when a loss is not finite."""
        t0 = time.perf_counter()
        run, cfg, shard = self.run, self.cfg, self.shard
        model, (app, traj, y) = run.model, self.train
        net = model if self.net is None else self.net
        lr = run.opt.param_groups[0]["lr"]
        model.train()

        def batch_loss(b_idx: torch.Tensor) -> tuple[torch.Tensor, int]:
            b_app, b_traj = stream_inputs(model, app[b_idx], traj[b_idx])
            b_app = None if b_app is None else appearance_float(b_app)  # per batch: the data stays compact
            b_app, b_traj = augment_batch(b_app, b_traj, cfg.augment, run.aug_gen)
            b_y = y[b_idx]
            if shard is not None:  # this process's slice of the global batch, augmented as one process does
                b_app, b_traj, b_y = shard.take(b_app, b_traj, b_y)
            out = net(b_app, b_traj)
            loss = model.loss(out, b_y, self.weight, cfg.label_smoothing)
            return loss, int((out[model.prediction_key].argmax(1) == b_y).sum())

        average = None if run.ema is None else lambda: run.ema.update_parameters(model)
        try:
            total_loss, correct, seen = train_epoch(
                run.opt,
                run.rng,
                len(y),
                cfg.batch_size,
                self.device,
                batch_loss,
                average,
                self.precision,
                EXPLODED_LOSS,
                shard,
            )
        except LossDiverged as exc:
            raise self._diverged(epoch, "the training loss of a batch", exc.value) from None
        if run.sched is not None:
            run.sched.step()
        if shard is not None:  # every process judges and keeps rank 0's network
            shard.sync(model)
            if run.ema is not None:
                shard.sync(run.ema)
        val_loss, val_acc = math.nan, math.nan
        if self.val is not None:
            batch = max(cfg.batch_size, 128)
            val_loss, val_acc = evaluate(run.kept, *self.val, self.weight, batch, self.precision)
            if shard is not None:
                val_loss, val_acc = shard.agree(val_loss, val_acc)
            if loss_diverged(val_loss, EXPLODED_LOSS):
                raise self._diverged(epoch, "the validation loss", val_loss)
        row = {
            "epoch": epoch,
            "train_loss": total_loss / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
        }
        if model.is_fused:
            row["fusion_weight"] = float(model.fusion_weight().detach())
        row["seconds"] = time.perf_counter() - t0
        return row

    def _diverged(self, epoch: int, what: str, value: float) -> Exception:
        return diverged(self.where, epoch, what, value, f"lower train.lr, now {self.cfg.lr:g}")

    def selection_key(self, row: dict[str, float]) -> tuple[float, float]:
        """Higher is better: (validation accuracy, -validation loss); without validation the latest epoch."""
        return (row["val_acc"], -row["val_loss"]) if self.val is not None else (row["epoch"], 0.0)

    def result(self, seconds: float) -> FitResult:
        """The best epoch's weights in eval mode, with the run's history and facts."""
        model = self.run.model
        model.load_state_dict(self.run.best.state)
        model.eval()
        where = ", ".join(p for p in (self.where, f"epoch {self.run.best.epoch}") if p)
        require_finite_weights(model, f"training diverged: {where}")
        return FitResult(
            model=model,
            history=self.run.history,
            best_epoch=self.run.best.epoch,
            seconds=seconds,
            pretrain_history=self.pretrain_history,
            precision=self.precision,
        )


def _split_tensors(data: ArrayDataset, device: str) -> Tensors:
    app, traj = to_device(data, device)
    return app, traj, torch.as_tensor(data.labels, dtype=torch.long, device=device)
