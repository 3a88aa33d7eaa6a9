"""Residual masking network (after Pham et al., ICPR 2020) on a small ResNet.

Every backbone stage (:mod:`stages.learning.models.resnet_blocks`) is followed by a masking block: a small U-Net on the
stage's map F that outputs a mask M in [0, 1] of the same shape (sigmoid), and the stage's output becomes
``F + F * M`` (the identity path keeps F; the mask can only emphasise, never erase). The next stage works on
that output. The last output is globally average-pooled -> dropout -> linear classifier.

Masking block of depth d: a 1x1 conv to ``mask_width`` x the stage's channels (0.5: 4x cheaper than the full
width), d x (2x2 max-pool, 3x3 conv - BN - ReLU) down, then d x (upsample to the skip's size, add the skip,
3x3 conv - BN - ReLU) up, then a 1x1 conv back to the stage's channels and a sigmoid. The paper uses depths 4, 3, 2, 1
from the shallowest stage on ResNet-34; ours default to 3, 2, 1, 1 for 32-112 px inputs, and a depth is
lowered automatically so the coarsest map keeps at least 1 pixel. Options (``model.appearance.options``):
widths, blocks, stem (backbone), mask_depths, mask_width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from stages.errors import StageError
from stages.learning.models.config import AppearanceConfig
from stages.learning.models.registry import BuildContext, parse_options, register_model
from stages.learning.models.resnet_blocks import ResNetOptions, SmallResNet, check_input_size, conv_bn_relu
from stages.learning.models.skipnet import InputNorm


class ResmaskOptions(ResNetOptions):
    mask_depths: list[PositiveInt] = Field(
        default_factory=lambda: [3, 2, 1, 1],
        description="U-Net depth of each stage's masking block (shallowest first; 0 = mask from 1x1 convs "
        "only); must have one entry per stage.",
    )
    mask_width: float = Field(
        0.5, gt=0.0, le=1.0, description="Channels inside a masking block, as a fraction of its stage's."
    )


class MaskingBlock(nn.Module):
    """Small U-Net: map [B, c, H, W] -> mask [B, c, H, W] in [0, 1]. Runs at ``width`` channels inside (1x1
    conv in, 1x1 conv out)."""

    def __init__(self, channels: int, depth: int, width: int) -> None:
        super().__init__()
        self.inp = conv_bn_relu(channels, width, kernel=1)
        self.down = nn.ModuleList(conv_bn_relu(width, width) for _ in range(depth))
        self.up = nn.ModuleList(conv_bn_relu(width, width) for _ in range(depth))
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        skips, h = [], self.inp(f)
        for conv in self.down:
            skips.append(h)
            h = conv(F.max_pool2d(h, 2))
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            h = conv(F.interpolate(h, size=skip.shape[-2:], mode="nearest") + skip)
        return torch.sigmoid(self.out(h))


class ResMaskNet(nn.Module):
    """Input ``x`` [B, C, S, S] in [0, 1] -> logits [B, n_classes]."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        input_size: int,
        widths: list[int] | tuple[int, ...] = (24, 48, 96, 192),
        blocks: int = 1,
        stem: int = 16,
        mask_depths: list[int] | tuple[int, ...] = (3, 2, 1, 1),
        mask_width: float = 0.5,
        dropout: float = 0.3,
        normalize: str = "fixed",
    ) -> None:
        super().__init__()
        if len(mask_depths) != len(widths):
            raise StageError(f"resmask: {len(mask_depths)} mask_depths for {len(widths)} stages")
        self.norm = InputNorm(normalize)
        self.backbone = SmallResNet(in_channels, widths, blocks, stem)
        masks, side = [], input_size
        for w, depth in zip(widths, mask_depths, strict=True):
            side = (side + 1) // 2  # stride-2 conv with padding 1
            fits = max(0, side.bit_length() - 1)  # halvings that keep >= 1 px
            masks.append(MaskingBlock(w, min(max(depth, 0), fits), max(4, math.ceil(w * mask_width))))
        self.masks = nn.ModuleList(masks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(widths[-1], n_classes)
        self.to(memory_format=torch.channels_last)

    def stage_maps(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per stage (F, M, F + F * M), shallow first."""
        h = self.backbone.stem(self.norm(x).contiguous(memory_format=torch.channels_last))
        out = []
        for stage, mask in zip(self.backbone.stages, self.masks, strict=True):
            f = stage(h)
            m = mask(f)
            h = f + f * m
            out.append((f, m, h))
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled last-stage output [B, widths[-1]]."""
        return self.stage_maps(x)[-1][2].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


@register_model("appearance", name="resmask")
def build_resmask(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """Residual masking: each ResNet stage followed by a U-Net mask M in [0, 1], output F + F * M."""
    opts = parse_options(cfg, ResmaskOptions, "resmask")
    check_input_size("resmask", ctx.input_size, len(opts.widths))
    return ResMaskNet(
        ctx.in_channels,
        ctx.n_classes,
        ctx.input_size,
        opts.widths,
        opts.blocks,
        opts.stem,
        opts.mask_depths,
        opts.mask_width,
        cfg.dropout,
        cfg.normalize,
    )
