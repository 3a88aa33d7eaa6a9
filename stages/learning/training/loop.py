"""The one batch loop of both training stages (shuffled batches, autocast, optimiser step) and evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from stages.learning.models import TwoStream
from stages.learning.training.dataset import appearance_float, stream_inputs
from stages.learning.training.divergence import check_batch_loss
from stages.learning.training.precision import autocast


def batches(rng: np.random.Generator, n: int, batch_size: int) -> list[np.ndarray]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm needs two)."""
    perm = rng.permutation(n)
    out = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out.pop()
    return out


def class_weight(labels: np.ndarray, n_classes: int, device: str) -> torch.Tensor:
    """Per-class loss weights [n_classes] float32: N / (n_classes x count), a class without rows counting 1."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weight = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return torch.as_tensor(weight, dtype=torch.float32, device=device)


def train_epoch(
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    n: int,
    batch_size: int,
    device: str,
    batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, int]],
    after_step: Callable[[], None] | None = None,
    precision: str = "float32",
    max_loss: float = math.inf,
) -> tuple[float, int, int]:
    """One epoch of optimisation over shuffled batches of ``n`` training rows (the one batch loop of both training
    stages): ``batch_loss(row indices on device) -> (loss, correct predictions)``, then a step of ``opt`` and
    ``after_step()``. A batch loss that is NaN, infinite or above ``max_loss`` raises
    :class:`~stages.learning.training.divergence.LossDiverged` before its backward pass, so no step is taken from it.
    ``precision`` ``bfloat16`` (resolved: never ``auto``) runs ``batch_loss`` under bfloat16 autocast;
    the backward pass and the step follow the dtypes autocast recorded. Returns (summed loss x batch size, correct,
    rows seen)."""
    total_loss, correct, seen = 0.0, 0, 0
    for idx in batches(rng, n, batch_size):
        b_idx = torch.as_tensor(idx, device=device)
        with autocast(precision, device):
            loss, n_correct = batch_loss(b_idx)
        value = float(loss.detach())  # the loop's one read of the loss per batch: checked before any step
        check_batch_loss(value, max_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        total_loss += value * len(idx)
        correct += n_correct
        seen += len(idx)
    return total_loss, correct, seen


@torch.no_grad()
def evaluate(
    model: TwoStream,
    app: torch.Tensor,
    traj: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    batch_size: int,
    precision: str = "float32",
) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode; the forward pass in ``precision`` (resolved, as in training). ``app`` as
    held (uint8 grey levels or float32), made float per batch."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        sl = slice(start, start + batch_size)
        with autocast(precision, app.device):  # the loss inside too: autocast runs cross-entropy in float32
            out = model(*stream_inputs(model, appearance_float(app[sl]), traj[sl]))
            loss = model.loss(out, y[sl], weight)
        total_loss += float(loss) * len(y[sl])
        correct += int((out[model.prediction_key].argmax(1) == y[sl]).sum())
    return total_loss / len(y), correct / len(y)
