"""Geometry networks on landmark trajectories [B, L, 68, 2] (normalised displacements from the first frame).

- ``trajnet``: one small network with weights shared over time steps (1-D convs over time on the 136
coordinates
  per step; kernel 1 = the same MLP on every step), pooled over time by mean and max, then a linear
  classifier. Accepts any L >= 1; its parameter count does not depend on L.
- ``flat``: DTAGN-style (Jung et al., ICCV 2015) FC 100 - FC 600 on the flattened fixed-length trajectory;
needs
  the L it was built for.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.errors import StageError
from stages.face_geometry import N_POINTS
from stages.learning.models.config import GeometryConfig
from stages.learning.models.registry import BuildContext, register_model

COORDS = N_POINTS * 2


def _check_trajectory(traj: torch.Tensor) -> None:
    if traj.dim() != 4 or traj.shape[2:] != (N_POINTS, 2):
        raise StageError(f"trajectory batch must be [B, L, {N_POINTS}, 2]; got {list(traj.shape)}")


class TrajNet(nn.Module):
    """Shared-weight trajectory network. Input [B, L, 68, 2] float32; output logits [B, n_classes].

    Per step: BN over the 136 coordinates, then ``layers`` x (Conv1d over time, kernel ``temporal_kernel``,
    zero padding) - BN - ReLU; pooled over time as concat(mean, max) -> dropout -> linear. BN statistics are
    taken over batch and time, so in eval mode every step goes through the same affine map. The input BN keeps
    a cumulative average (``momentum=None``): nothing learnable precedes it, so its running statistics are the
    training data's after any number of batches (the trajectory stage's scale is not assumed).
    """

    def __init__(
        self,
        n_classes: int,
        hidden: int = 128,
        layers: int = 2,
        temporal_kernel: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if temporal_kernel % 2 != 1:
            raise StageError(f"trajnet: temporal_kernel must be odd (got {temporal_kernel})")
        mods: list[nn.Module] = [nn.BatchNorm1d(COORDS, momentum=None)]
        c = COORDS
        for _ in range(layers):
            mods += [
                nn.Conv1d(c, hidden, temporal_kernel, padding=temporal_kernel // 2, bias=False),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
            ]
            c = hidden
        self.step_net = nn.Sequential(*mods)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def step_features(self, traj: torch.Tensor) -> torch.Tensor:
        """Per-step features [B, hidden, L]."""
        _check_trajectory(traj)
        b, length = traj.shape[:2]
        return self.step_net(traj.reshape(b, length, COORDS).transpose(1, 2))

    def features(self, traj: torch.Tensor) -> torch.Tensor:
        """Time-pooled feature [B, 2 * hidden] = concat(mean over steps, max over steps)."""
        h = self.step_features(traj)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def forward(self, traj: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(traj)))


class FlatTrajNet(nn.Module):
    """DTAGN geometry network: flatten [B, L, 68, 2] -> BN -> (FC - ReLU) per width -> dropout -> linear.

    Only accepts the ``n_steps`` it was built with.
    """

    def __init__(
        self,
        n_classes: int,
        n_steps: int,
        hidden: list[int] | tuple[int, ...] = (100, 600),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.n_steps = n_steps
        mods: list[nn.Module] = [nn.BatchNorm1d(n_steps * COORDS, momentum=None)]  # see TrajNet
        c = n_steps * COORDS
        for width in hidden:
            mods += [nn.Linear(c, width), nn.ReLU(inplace=True)]
            c = width
        self.body = nn.Sequential(*mods)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, n_classes)

    def features(self, traj: torch.Tensor) -> torch.Tensor:
        _check_trajectory(traj)
        if traj.shape[1] != self.n_steps:
            raise StageError(
                f"flat geometry network was built for trajectories of {self.n_steps} steps; got {traj.shape[1]}"
            )
        return self.body(traj.reshape(traj.shape[0], -1))

    def forward(self, traj: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(traj)))


@register_model("geometry", name="trajnet")
def build_trajnet(cfg: GeometryConfig, ctx: BuildContext) -> nn.Module:
    """Shared-weight per-step network over the trajectory, mean+max pooled over time; any length."""
    if cfg.options:
        raise StageError(f"trajnet takes no options; got {sorted(cfg.options)}")
    return TrajNet(ctx.n_classes, cfg.hidden, cfg.layers, cfg.temporal_kernel, cfg.dropout)


@register_model("geometry", name="flat")
def build_flat(cfg: GeometryConfig, ctx: BuildContext) -> nn.Module:
    """DTAGN-style FC 100 - FC 600 on the flattened fixed-length trajectory."""
    if cfg.options:
        raise StageError(f"flat takes no options; got {sorted(cfg.options)}")
    if not ctx.n_steps:
        raise StageError("geometry model 'flat' needs the trajectory length (n_steps) at build time")
    return FlatTrajNet(ctx.n_classes, ctx.n_steps, cfg.flat_hidden, cfg.dropout)
