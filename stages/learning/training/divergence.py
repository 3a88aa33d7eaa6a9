"""Diverged training: the error of a network whose loss blows up, and the checks that keep NaN weights off disk."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch

from stages.errors import StageError
from stages.learning.training.checkpoint_header import nonfinite_phrase

EXPLODED_LOSS = 1e6
"""An expression-training loss (mean cross-entropy, summed over at most a few outputs) above this has diverged even
while finite: cross-entropy reaches it only with logits about a million apart, which no converging network has
(a fresh one starts near ln(classes), ~2). ``train.lr=1e4`` on the demo data gives batch losses of ~1e14."""


class TrainingDiverged(StageError):
    """A network's loss blew up (NaN, infinite or above :data:`EXPLODED_LOSS`) or its weights became non-finite:
    its training stops at once and nothing of it is written. The message names the network (fold, member), the
    epoch and the value."""


class LossDiverged(TrainingDiverged):
    """A batch loss that diverged, raised by the batch loop before its backward pass; ``value`` is the loss.
    :func:`~stages.learning.training.fit.fit` re-raises it as a :class:`TrainingDiverged` naming the epoch."""

    def __init__(self, value: float) -> None:
        self.value = value
        super().__init__(f"training diverged: the loss of a batch is {value:g}")

    def __reduce__(self) -> tuple:
        return LossDiverged, (self.value,)


def loss_diverged(value: float, limit: float = math.inf) -> bool:
    """True when a loss ``value`` is NaN, infinite or above ``limit``."""
    return not (math.isfinite(value) and value <= limit)


def check_batch_loss(value: float, limit: float = math.inf) -> None:
    """Raise :class:`LossDiverged` when a batch's loss ``value`` (the float the loop reads anyway) is NaN, infinite
    or above ``limit``."""
    if loss_diverged(value, limit):
        raise LossDiverged(value)


def diverged(where: str, epoch: int, what: str, value: float, hint: str) -> TrainingDiverged:
    """The error of a network whose ``what`` (e.g. "the validation loss") diverged to ``value`` in ``epoch``
    (1-based): ``training diverged: fold 3, epoch 2: the validation loss is nan (lower train.lr, now 1e+06)``;
    a finite value is shown with the bound it passed. ``where`` names the network ("" for the only one); ``hint``
    says what to change."""
    place = ", ".join(p for p in (where, f"epoch {epoch}") if p)
    shown = f"{value:.3g}, above {EXPLODED_LOSS:g}" if math.isfinite(value) else f"{value:g}"
    return TrainingDiverged(f"training diverged: {place}: {what} is {shown} ({hint})")


def nonfinite_tensors(tensors: object, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity anywhere in ``tensors``: a tensor, a state dict,
    or nested dicts / lists / tuples of them (a training state); ``prefix`` starts each name. Other values
    (integers, strings, random generator states) are not checked. About 0.1 ms for a model of 50 tensors: one
    float64 sum per tensor (exact: finite float32 values cannot overflow it), named one by one only when one fails."""
    named = list(_floating(tensors, prefix))
    if not named:
        return []
    sums = [t.detach().sum(dtype=torch.float64) for _, t in named]
    if bool(torch.isfinite(torch.stack([s.to(sums[0].device) for s in sums])).all()):
        return []
    return [name for name, t in named if not bool(torch.isfinite(t).all())]


def _floating(value: object, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _floating(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floating(item, f"{name}[{i}]")


def nonfinite_note(tensors: object) -> str:
    """What is wrong with ``tensors`` (as :func:`nonfinite_tensors` walks them), e.g. "NaN or infinite in
    head.weight and 3 more"; the empty string when every floating tensor is finite."""
    return nonfinite_phrase(nonfinite_tensors(tensors))


def require_finite_weights(model: torch.nn.Module, what: str) -> None:
    """Raise :class:`TrainingDiverged` starting with ``what`` (e.g. "training diverged: member 2/3") when any weight
    or buffer of ``model`` is NaN or infinite: such a network is never saved or used."""
    note = nonfinite_note(model.state_dict())
    if note:
        raise TrainingDiverged(f"{what}: its weights are not finite ({note})")
