"""Model inputs of N sequences as arrays (:class:`ArrayDataset`), and those arrays as tensors on a device."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from stages.errors import StageError
from stages.learning.models import ModelConfig, TwoStream


@dataclass
class ArrayDataset:
    """Model inputs of N sequences: ``appearance`` [N, C, S, S] float32 in [0, 1], ``trajectory``
    [N, L, 68, 2] float32, ``labels`` [N] int64 class indices; ``targets``: optional per-sequence arrays
    [N, ...] that only a network's first training stage reads (:class:`stages.learning.models.registry.Pretraining`)."""

    appearance: np.ndarray
    trajectory: np.ndarray
    labels: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = {len(self.appearance), len(self.trajectory), len(self.labels)}
        if len(n) != 1:
            raise StageError(
                f"dataset arrays disagree on N: appearance {len(self.appearance)}, trajectory "
                f"{len(self.trajectory)}, labels {len(self.labels)}"
            )
        for name, value in self.targets.items():
            if len(value) != len(self.labels):
                raise StageError(f"target {name!r} has {len(value)} rows for {len(self.labels)} sequences")

    def __len__(self) -> int:
        return len(self.labels)


def to_tensors(data: ArrayDataset | tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(appearance, trajectory) of an :class:`ArrayDataset` or an (appearance, trajectory, ...) tuple as float32
    tensors on ``device``."""
    app, traj = (data.appearance, data.trajectory) if isinstance(data, ArrayDataset) else data[:2]
    return (
        torch.as_tensor(np.asarray(app, dtype=np.float32), device=device),
        torch.as_tensor(np.asarray(traj, dtype=np.float32), device=device),
    )


def stream_inputs(
    model: TwoStream, app: torch.Tensor, traj: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (appearance, trajectory) arguments of ``model``'s forward pass: None for a stream it does not have."""
    return (app if model.appearance is not None else None, traj if model.geometry is not None else None)


def check_data(name: str, data: ArrayDataset, n_classes: int, model_cfg: ModelConfig) -> None:
    """:class:`StageError` naming the ``name`` split unless its shapes fit ``model_cfg`` and its labels lie in
    [0, n_classes)."""
    if data.appearance.ndim != 4 or data.appearance.shape[-1] != model_cfg.input.size:
        raise StageError(
            f"{name} appearance must be [N, C, {model_cfg.input.size}, {model_cfg.input.size}]; "
            f"got {list(data.appearance.shape)}"
        )
    if data.trajectory.ndim != 4 or data.trajectory.shape[2:] != (68, 2):
        raise StageError(f"{name} trajectory must be [N, L, 68, 2]; got {list(data.trajectory.shape)}")
    if len(data) and (data.labels.min() < 0 or data.labels.max() >= n_classes):
        raise StageError(f"{name} labels must lie in [0, {n_classes}); got {data.labels.min()}..{data.labels.max()}")
