"""The one batch loop of both training stages (shuffled batches, autocast, optimiser step), each data-parallel
process's share of it (:class:`Shard`), and evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from stages.learning.models import TwoStream
from stages.learning.training.dataset import appearance_float, stream_inputs
from stages.learning.training.divergence import check_batch_loss
from stages.learning.training.precision import autocast


@dataclass(frozen=True)
class Shard:
    """This process's share of data-parallel training: rank ``rank`` of ``world`` processes of an initialised
    ``torch.distributed`` process group (gloo on the CPU, NCCL on GPUs), all running the same training call.

    Every process draws the shuffled batch order and the augmentation of each GLOBAL batch exactly as one process
    does (same generators, same draws), then runs the forward and backward passes on its slice (:meth:`part`) of
    that batch; the network is wrapped in ``DistributedDataParallel`` (:meth:`wrap`), whose gradient average, with
    each slice's loss weighted by its share (:meth:`batch`), is the gradient of the global batch's mean loss. So N
    processes train on the batches one process trains on, up to the order of float sums, dropout masks (each
    process draws its own for its slice), BatchNorm statistics (per slice; rank 0's running statistics are kept:
    :meth:`sync`) and the mean of a class-weighted loss (weighted per slice). The last batch of an epoch is dropped
    when it is smaller than :attr:`min_batch` (one process drops it only when it has one row)."""

    rank: int
    world: int

    @property
    def min_batch(self) -> int:
        """The smallest batch every process can take a slice of 2 rows or more from (BatchNorm needs two)."""
        return 2 * self.world

    def part(self, n: int) -> slice:
        """This process's slice of a global batch of ``n`` rows (contiguous, sizes differing by at most one)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def take(self, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """This process's slice (:meth:`part`) of each global-batch tensor (None stays None)."""
        return tuple(None if t is None else t[self.part(len(t))] for t in tensors)

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        """``model`` in ``DistributedDataParallel`` for the training forward pass (its parameters and buffers are
        rank 0's from here on; unused parameters allowed, as a stream's auxiliary head may not reach the loss)."""
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None  # a CUDA tensor's device always has its index
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def batch(self, loss: torch.Tensor, correct: int, n: int) -> tuple[float, int, torch.Tensor]:
        """(global batch mean loss, global correct predictions, the loss to back-propagate) of a global batch of
        ``n`` rows from this process's slice mean ``loss`` and ``correct``: the totals are summed over the
        processes (every process sees the same values, so all stop together on a diverged loss), and the loss is
        weighted by slice size x world / n, so DDP's average of the gradients is the global batch mean's."""
        share = self.part(n)
        rows = share.stop - share.start
        totals = torch.tensor([float(loss.detach()) * rows, float(correct)], dtype=torch.float64, device=loss.device)
        dist.all_reduce(totals)
        return float(totals[0]) / n, int(round(float(totals[1]))), loss * (rows * self.world / n)

    def sync(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's parameters and buffers of ``module`` (BatchNorm statistics, a weight
        average), so that all processes judge, keep and save the same network."""
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def agree(self, *values: float) -> list[float]:
        """Rank 0's ``values`` on every process."""
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        shared = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(shared, src=0)
        return [float(v) for v in shared]


def batches(rng: np.random.Generator, n: int, batch_size: int, min_last: int = 2) -> list[np.ndarray]:
    """Shuffled index batches; a trailing batch smaller than ``min_last`` is dropped (one sample: BatchNorm needs
    two; data-parallel training: :attr:`Shard.min_batch`)."""
    perm = rng.permutation(n)
    out = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < min_last:
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
    shard: Shard | None = None,
) -> tuple[float, int, int]:
    """One epoch of optimisation over shuffled batches of ``n`` training rows (the one batch loop of both training
    stages): ``batch_loss(row indices on device) -> (loss, correct predictions)``, then a step of ``opt`` and
    ``after_step()``. A batch loss that is NaN, infinite or above ``max_loss`` raises
    :class:`~stages.learning.training.divergence.LossDiverged` before its backward pass, so no step is taken from it.
    ``precision`` ``bfloat16`` (resolved: never ``auto``) runs ``batch_loss`` under bfloat16 autocast;
    the backward pass and the step follow the dtypes autocast recorded. Returns (summed loss x batch size, correct,
    rows seen). ``shard``: data-parallel training (:class:`Shard`): ``batch_loss`` still gets the GLOBAL batch's
    rows and returns its slice's mean loss and correct count; the returned totals are the global ones."""
    total_loss, correct, seen = 0.0, 0, 0
    for idx in batches(rng, n, batch_size, 2 if shard is None else shard.min_batch):
        b_idx = torch.as_tensor(idx, device=device)
        with autocast(precision, device):
            loss, n_correct = batch_loss(b_idx)
        if shard is None:
            value = float(loss.detach())  # the loop's one read of the loss per batch: checked before any step
        else:
            value, n_correct, loss = shard.batch(loss, n_correct, len(idx))
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
