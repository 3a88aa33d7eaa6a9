"""Weight averaging of training (``TrainConfig.ema_decay``): an exponential moving average with a warm-up."""

from __future__ import annotations

from collections.abc import Callable

import torch


def ema_decay_at(decay: float, n_averaged: int) -> float:
    """The moving average's decay after ``n_averaged`` updates: ``min(decay, (1 + n) / (10 + n))``. Early on
    the average follows the weights closely instead of sitting near their initial values (a fixed 0.99 let an
    average of barely-trained weights win a small validation set at epoch 3 and be kept)."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def ema_warmup_avg_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """``AveragedModel``'s multi_avg_fn for :func:`ema_decay_at`: averaged <- d * averaged + (1 - d) * current."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = ema_decay_at(decay, int(num_averaged))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's step count): the same blend, cast back
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * d + c * (1.0 - d))

    return update
