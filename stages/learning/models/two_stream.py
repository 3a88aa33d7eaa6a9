"""Two-stream model: an appearance network and a geometry network, fused at the logits (DTAGN, Verma et al.).

``fused = w * appearance_logits + (1 - w) * geometry_logits`` (fusion sum / weighted / learned), or, with fusion
``mixture``, ``fused = log(w * softmax(appearance) + (1 - w) * softmax(geometry))``: log-probabilities of the
streams' mixture, so a stream that is confidently wrong outside its training domain cannot veto the other.
With ``joint_loss`` the cross-entropies of all three outputs are summed (DTAGN joint fine-tuning) and the fused
output predicts.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# module import: stages.learning.augment imports this package's config (a cycle)
import stages.learning.augment as augment
from stages.errors import StageError
from stages.learning.models.config import FRAME_MODES, ModelConfig, ModelInputConfig
from stages.learning.models.registry import BuildContext, Pretrainable, Pretraining, build_stream


def frames_for(input_cfg: ModelInputConfig) -> int:
    """Frames stacked in the appearance input (:data:`stages.learning.models.config.FRAME_MODES`)."""
    return FRAME_MODES[input_cfg.appearance].n_frames(input_cfg.k)


def in_channels_for(input_cfg: ModelInputConfig, color: bool) -> int:
    """Appearance channels C = frames x (3 for RGB crops, 1 for grey)."""
    return frames_for(input_cfg) * (3 if color else 1)


class FrameAveraged(nn.Module):
    """Runs an appearance network on each of ``n_frames`` frames stacked frame-major in the channels (shared
    weights: every frame is a sample of its own) and averages its logits over the frames.

    Input [B, n_frames * c, S, S] -> the network on [B * n_frames, c, S, S] -> logits [B, n_frames, K] -> mean
    over frames [B, K]. Used for ``model.input.appearance: frames``. With ``train_one``, training mode instead
    feeds one random frame per sequence (logits of that frame)."""

    def __init__(self, net: nn.Module, n_frames: int, train_one: bool = False) -> None:
        super().__init__()
        self.net = net
        self.n_frames = n_frames
        self.train_one = train_one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        frames = x.reshape(b, self.n_frames, c // self.n_frames, h, w)
        if self.training and self.train_one:  # one frame per sequence, drawn from torch's (seeded) generator
            pick = torch.randint(self.n_frames, (b,), device=x.device)
            return self.net(frames[torch.arange(b, device=x.device), pick])
        logits = self.net(frames.reshape(b * self.n_frames, c // self.n_frames, h, w))
        return logits.reshape(b, self.n_frames, -1).mean(dim=1)

    def pretraining(self, targets: dict[str, np.ndarray], n: int, device: str) -> Pretraining | None:
        """The wrapped network's first stage (None when it has none), per frame: each of a sequence's frames is
        a sample regressing the sequence's target (e.g. fn2en's face descriptor: one person, one descriptor)."""
        if not isinstance(self.net, Pretrainable):
            return None
        plan = self.net.pretraining(targets, n, device)
        if plan is None:
            return None
        k = self.n_frames

        def per_frame_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            return plan.loss(x.reshape(b * k, c // k, h, w), target.repeat_interleave(k, dim=0))

        return replace(plan, loss=per_frame_loss)


FUSIONS = ("sum", "weighted", "learned", "mixture")


class TwoStream(nn.Module):
    """Holds ``appearance`` and/or ``geometry`` networks (either may be None, not both).

    ``forward(app, traj)``: ``app`` [B, C, S, S] float32 in [0, 1], ``traj`` [B, L, 68, 2] float32 (an absent
    stream's input may be None). Returns a dict of logits [B, K] with keys ``appearance``, ``geometry`` and
    ``fused`` (those that exist); ``prediction_key`` names the one that predicts.
    """

    def __init__(
        self,
        appearance: nn.Module | None,
        geometry: nn.Module | None,
        fusion: str = "sum",
        fusion_weight: float = 0.5,
        joint_loss: bool = True,
        test_flip: bool = False,
    ) -> None:
        super().__init__()
        self.test_flip = test_flip
        if appearance is None and geometry is None:
            raise StageError("a model needs at least one stream (appearance or geometry)")
        if fusion not in FUSIONS:
            raise StageError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        self.appearance = appearance
        self.geometry = geometry
        # n_classes, in_channels, n_steps: set by build_model, stored in checkpoints
        self.build_args: dict = {}
        self.fusion = fusion
        self.joint_loss = joint_loss
        self.fixed_weight = 0.5 if fusion == "sum" else float(fusion_weight)
        self.fusion_logit = (
            nn.Parameter(torch.tensor(math.log(fusion_weight / (1.0 - fusion_weight)))) if fusion == "learned" else None
        )

    @property
    def is_fused(self) -> bool:
        return self.appearance is not None and self.geometry is not None

    @property
    def prediction_key(self) -> str:
        """Name of the output that predicts: ``fused`` when both streams exist, else the only stream."""
        if self.is_fused:
            return "fused"
        return "appearance" if self.appearance is not None else "geometry"

    def fusion_weight(self) -> torch.Tensor:
        """Weight w of the appearance logits (a tensor; carries gradient for ``learned``)."""
        if self.fusion_logit is not None:
            return torch.sigmoid(self.fusion_logit)
        return torch.tensor(self.fixed_weight)

    def forward(self, app: torch.Tensor | None = None, traj: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.test_flip and not self.training:
            out = self._forward(app, traj)
            mirrored = self._forward(
                None if app is None else augment.hflip_appearance(app),
                None if traj is None else augment.hflip_trajectory(traj),
            )
            return {k: (v + mirrored[k]) / 2 for k, v in out.items()}
        return self._forward(app, traj)

    def _forward(self, app: torch.Tensor | None, traj: torch.Tensor | None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.appearance is not None:
            if app is None:
                raise StageError("this model has an appearance stream but got no appearance input")
            out["appearance"] = self.appearance(app)
        if self.geometry is not None:
            if traj is None:
                raise StageError("this model has a geometry stream but got no trajectory input")
            out["geometry"] = self.geometry(traj)
        if self.is_fused:
            w = self.fusion_weight().to(out["appearance"])  # device and dtype of the logits
            if self.fusion == "mixture":
                parts = torch.stack(
                    [
                        torch.log(w) + F.log_softmax(out["appearance"], dim=1),
                        torch.log1p(-w) + F.log_softmax(out["geometry"], dim=1),
                    ]
                )
                out["fused"] = torch.logsumexp(parts, dim=0)
            else:
                out["fused"] = w * out["appearance"] + (1.0 - w) * out["geometry"]
        return out

    def loss(
        self,
        outputs: dict[str, torch.Tensor],
        y: torch.Tensor,
        class_weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Mean cross-entropy (with ``label_smoothing``): summed over all outputs with ``joint_loss``, else of the
        predicting output."""
        keys = sorted(outputs) if self.joint_loss else [self.prediction_key]
        return sum(F.cross_entropy(outputs[k], y, weight=class_weight, label_smoothing=label_smoothing) for k in keys)


def build_model(cfg: ModelConfig, n_classes: int, in_channels: int, n_steps: int | None = None) -> TwoStream:
    """Build the two-stream model from the registry.

    ``n_classes``: logits per sample; ``in_channels``: appearance C (see :func:`in_channels_for`);
    ``n_steps``: trajectory length L (only fixed-length geometry networks such as ``flat`` need it).
    """
    if n_classes < 2:
        raise StageError(f"a classifier needs at least 2 classes; got {n_classes}")
    per_frame = FRAME_MODES[cfg.input.appearance].per_frame
    n_frames = frames_for(cfg.input)
    if per_frame and in_channels % n_frames:
        raise StageError(
            f"appearance input 'frames' needs channels = {n_frames} frames x colours; got {in_channels} "
            f"(network {cfg.appearance.name!r} adds input channels of its own: use last_k)"
        )
    app_channels = in_channels // n_frames if per_frame else in_channels
    ctx = BuildContext(n_classes=n_classes, in_channels=app_channels, input_size=cfg.input.size, n_steps=n_steps)
    appearance = build_stream("appearance", cfg.appearance, ctx) if cfg.streams in ("appearance", "fused") else None
    if appearance is not None and per_frame:
        appearance = FrameAveraged(appearance, n_frames, cfg.input.train_frames == "one")
    geometry = build_stream("geometry", cfg.geometry, ctx) if cfg.streams in ("geometry", "fused") else None
    model = TwoStream(appearance, geometry, cfg.fusion, cfg.fusion_weight, cfg.joint_loss, cfg.test_flip)
    model.build_args = {"n_classes": n_classes, "in_channels": in_channels, "n_steps": n_steps}
    return model
