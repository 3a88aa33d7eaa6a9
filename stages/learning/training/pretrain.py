"""The first training stage of a stream network that has one (fn2en), run on the training split before fit."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from stages.learning.augment import augment_batch
from stages.learning.models import TrainConfig, TwoStream
from stages.learning.models.registry import Pretrainable
from stages.learning.training.dataset import appearance_float
from stages.learning.training.divergence import LossDiverged, diverged
from stages.learning.training.loop import train_epoch
from stages.learning.training.precision import resolve_precision


def pretrain(
    net: torch.nn.Module,
    stream: str,
    app: torch.Tensor | None,
    traj: torch.Tensor | None,
    targets: dict[str, np.ndarray],
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    where: str = "",
) -> list[dict[str, float]]:
    """Run the first training stage of ``net`` (the ``stream`` network, ``appearance`` or ``geometry``) when it
    is :class:`~stages.learning.models.registry.Pretrainable` and configured to have one; [] otherwise.

    TRAINING split only: ``app`` [N, C, S, S] (uint8 grey levels or float32) / ``traj`` [N, L, 68, 2] on ``device``
    (the one the stream reads is required), ``targets`` its per-sequence arrays. The stage's own AdamW and cosine
    schedule, ``cfg``'s batch size, weight decay and augmentation (its own generator); ``seed`` fixes shuffling and
    augmentation.
    Returns one row per epoch: stream, epoch, loss (mean over the epoch's batches, per sequence), seconds.
    Leaves ``net`` in train mode. A non-finite batch loss stops it with a
    :class:`~stages.learning.training.divergence.TrainingDiverged` naming ``where`` (the network), the stage and
    the epoch."""
    if not isinstance(net, Pretrainable):
        return []
    ref = app if stream == "appearance" else traj
    plan = net.pretraining(targets, len(ref), device)
    if plan is None:
        return []
    shuffle_seed, aug_seed = np.random.SeedSequence([seed, 1]).generate_state(2).tolist()
    gen = torch.Generator().manual_seed(aug_seed)
    rng = np.random.default_rng(shuffle_seed)
    opt = torch.optim.AdamW(plan.parameters, lr=plan.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=plan.epochs)

    def batch_loss(b_idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        if stream == "appearance":
            x, _ = augment_batch(appearance_float(ref[b_idx]), None, cfg.augment, gen)
        else:
            _, x = augment_batch(None, ref[b_idx], cfg.augment, gen)
        return plan.loss(x, plan.target[b_idx]), 0

    rows = []
    precision = resolve_precision(cfg.precision, device)
    net.train()
    for epoch in range(1, plan.epochs + 1):
        t0 = time.perf_counter()
        try:
            total, _, seen = train_epoch(opt, rng, len(ref), cfg.batch_size, device, batch_loss, precision=precision)
        except LossDiverged as exc:
            what = f"the first-stage loss of the {stream} network"
            raise diverged(where, epoch, what, exc.value, f"lower its learning rate, now {plan.lr:g}") from None
        sched.step()
        rows.append(
            {
                "stream": stream,
                "epoch": epoch,
                "loss": total / seen if seen else math.nan,
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


def pretrain_streams(
    model: TwoStream,
    app: torch.Tensor,
    traj: torch.Tensor,
    targets: dict[str, np.ndarray],
    cfg: TrainConfig,
    seed: int,
    device: str,
    where: str = "",
) -> list[dict[str, float]]:
    """:func:`pretrain` every stream network that has a first stage (appearance first). Models without one draw
    no random numbers here, so their training is unchanged by this step. ``where`` names the network in errors."""
    rows: list[dict[str, float]] = []
    for stream, net in (("appearance", model.appearance), ("geometry", model.geometry)):
        if net is not None:
            rows += pretrain(net, stream, app, traj, targets, cfg, seed, device, where)
    return rows
