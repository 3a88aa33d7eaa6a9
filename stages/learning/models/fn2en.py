"""FaceNet2ExpNet-style two-stage network (after Ding et al., 2017), trained from scratch.

Stage 1 (:meth:`FN2EN.pretraining`: the objective; :func:`stages.learning.training.fit.fit` runs it before the
expression
training, in the same training loop): the conv layers plus a linear regression head learn to reproduce a
face-recognition network's descriptor of the same face -- dlib's ``dlib_face_recognition_resnet_model_v1.dat``
128-d descriptor of the peak frame, computed once per sequence in the data-preparation step (registered with
``training_targets=("face_descriptor",)``; see :mod:`stages.learning.inputs.face_descriptor`). Loss: 1 - cosine
similarity
(default) or MSE on unit-length descriptors. Stage 2: classifier layers (FC - ReLU - dropout - linear) on the
pooled conv features, and the whole network is trained on expressions. The regression head is not used
afterwards.

Conv layers: blocks of 3x3 conv - 2x2 max-pool - BN - ReLU (as skipnet's), global average pooling.
Options (``model.appearance.options``): channels, convs_per_block, fc, pretrain_epochs (0 = skip stage 1),
pretrain_lr, pretrain_loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from stages.errors import StageError
from stages.learning.models.config import AppearanceConfig
from stages.learning.models.registry import BuildContext, Pretraining, parse_options, register_model
from stages.learning.models.skipnet import ConvBlock, InputNorm

TARGET = "face_descriptor"


class Fn2enOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 96, 128], min_length=1)
    convs_per_block: int = Field(1, ge=1)
    fc: int = Field(256, ge=1, description="Width of the stage-2 hidden FC layer.")
    descriptor_dim: int = Field(128, ge=1, description="Length of the face-recognition descriptor regressed.")
    pretrain_epochs: int = Field(15, ge=0, description="Stage-1 epochs (0 = no stage 1).")
    pretrain_lr: float = Field(1e-3, gt=0.0)
    pretrain_loss: Literal["cosine", "mse"] = "cosine"


def _cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(pred, target, dim=1).mean()


def _mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(F.normalize(pred, dim=1), target)


PRETRAIN_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": _cosine_loss,
    "mse": _mse_loss,
}


class FN2EN(nn.Module):
    """Input ``x`` [B, C, S, S] in [0, 1] -> logits [B, n_classes]; :meth:`embed` -> descriptor estimate."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        input_size: int | None = None,
        channels: list[int] | tuple[int, ...] = (32, 64, 96, 128),
        convs_per_block: int = 1,
        fc: int = 256,
        descriptor_dim: int = 128,
        dropout: float = 0.3,
        normalize: str = "fixed",
        pretrain_epochs: int = 15,
        pretrain_lr: float = 1e-3,
        pretrain_loss: str = "cosine",
    ) -> None:
        super().__init__()
        if input_size is not None and input_size < 2 ** len(channels):
            raise StageError(f"fn2en: input size {input_size} px is smaller than 2**{len(channels)}")
        self.norm = InputNorm(normalize)
        blocks, c = [], in_channels
        for out in channels:
            blocks.append(ConvBlock(c, out, convs_per_block))
            c = out
        self.convs = nn.Sequential(*blocks)
        self.regressor = nn.Linear(c, descriptor_dim)  # stage 1 only
        self.head = nn.Sequential(
            nn.Linear(c, fc), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(fc, n_classes)
        )  # stage 2
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_lr = pretrain_lr
        self.pretrain_loss = PRETRAIN_LOSSES[pretrain_loss]
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled conv feature [B, channels[-1]]."""
        return self.convs(self.norm(x).contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-1 output: the estimate of the face descriptor [B, descriptor_dim]."""
        return self.regressor(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def pretraining(self, targets: dict[str, np.ndarray], n: int, device: str) -> Pretraining | None:
        """Stage 1 (run by :func:`stages.learning.training.fit.fit` on the TRAINING split): regress
        ``targets['face_descriptor']``
        [n, descriptor_dim] (unit length) from the appearance input for ``pretrain_epochs`` epochs at
        ``pretrain_lr``, training the conv layers and the regression head only. None when ``pretrain_epochs`` is 0."""
        if self.pretrain_epochs == 0:
            return None
        if TARGET not in targets:
            raise StageError(
                f"fn2en needs the training faces' descriptors (targets['{TARGET}']) for its first stage; they "
                "are computed by the data preparation (stages.learning.inputs.extras.build_targets) -- or set "
                "model.appearance.options.pretrain_epochs=0"
            )
        target = torch.as_tensor(np.asarray(targets[TARGET], dtype=np.float32), device=device)
        if target.shape != (n, self.regressor.out_features):
            raise StageError(
                f"fn2en: {TARGET} targets must be [{n}, {self.regressor.out_features}]; got {list(target.shape)}"
            )
        return Pretraining(
            epochs=self.pretrain_epochs,
            lr=self.pretrain_lr,
            parameters=[*self.convs.parameters(), *self.regressor.parameters()],
            loss=lambda x, t: self.pretrain_loss(self.embed(x), t),
            target=F.normalize(target, dim=1),
        )


@register_model("appearance", name="fn2en", training_targets=(TARGET,))  # per-sequence arrays (model_extras)
def build_fn2en(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """FaceNet2ExpNet: conv layers first regress a face-recognition descriptor, then learn expressions."""
    opts = parse_options(cfg, Fn2enOptions, "fn2en")
    return FN2EN(
        ctx.in_channels,
        ctx.n_classes,
        ctx.input_size,
        opts.channels,
        opts.convs_per_block,
        opts.fc,
        opts.descriptor_dim,
        cfg.dropout,
        cfg.normalize,
        opts.pretrain_epochs,
        opts.pretrain_lr,
        opts.pretrain_loss,
    )
