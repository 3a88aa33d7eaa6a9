"""Model inputs of N sequences as arrays (:class:`ArrayDataset`), and those arrays as tensors on a device."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from stages.errors import StageError
from stages.learning.models import ModelConfig, TwoStream


@dataclass
class ArrayDataset:
    """Model inputs of N sequences: ``appearance`` [N, C, S, S] float32 in [0, 1], or uint8 grey levels (value x
    255: :func:`stages.learning.inputs.extras.model_inputs` holds whole-grey-level inputs so, a quarter of the memory;
    made float per batch by :func:`appearance_float`), ``trajectory`` [N, L, 68, 2] float32, ``labels`` [N] int64
    class indices; ``targets``: optional per-sequence arrays [N, ...] that only a network's first training stage
    reads (:class:`stages.learning.models.registry.Pretraining`)."""

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


def appearance_float(app: torch.Tensor) -> torch.Tensor:
    """Appearance as the networks read it, float32 in [0, 1]: uint8 grey levels divided by 255 (bit-identical to
    numpy's ``float32(level) / float32(255)``, the float input path), any other dtype as float32."""
    if app.dtype == torch.uint8:
        return app.to(torch.float32).div_(255.0)
    return app.to(torch.float32)


def to_device(data: ArrayDataset | tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(appearance, trajectory) of an :class:`ArrayDataset` or an (appearance, trajectory, ...) tuple as tensors on
    ``device``, appearance as held (uint8 grey levels stay uint8: :func:`appearance_float` per batch; anything
    else float32), trajectory float32. On the CPU, arrays already of those dtypes are shared, not copied."""
    app, traj = (data.appearance, data.trajectory) if isinstance(data, ArrayDataset) else data[:2]
    app = np.asarray(app)
    return (
        torch.as_tensor(app if app.dtype == np.uint8 else np.asarray(app, dtype=np.float32), device=device),
        torch.as_tensor(np.asarray(traj, dtype=np.float32), device=device),
    )


def to_tensors(data: ArrayDataset | tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(appearance, trajectory) of an :class:`ArrayDataset` or an (appearance, trajectory, ...) tuple as float32
    tensors on ``device`` (appearance through :func:`appearance_float`)."""
    app, traj = to_device(data, device)
    return appearance_float(app), traj


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
