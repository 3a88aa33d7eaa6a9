"""A small ResNet for 32-112 px faces, shared by the ``dba`` and ``resmask`` appearance networks.

Stem: 3x3 conv (stride 1) - BN - ReLU at the input resolution. Then one stage per entry of ``widths``; each
stage is ``blocks`` basic blocks (two 3x3 convs with BN, identity or 1x1-conv shortcut, ReLU after the sum), the
first of which has stride 2. So four stages turn an S x S input into maps of S/2, S/4, S/8 and S/16 pixels
(rounded up). No pretrained weights; He initialisation. (Zero-initialising each block's last BN gain, a common
trick for deep ResNets, slowed these shallow ones down several-fold on small data, so it is not used.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from stages.errors import StageError


class ResNetOptions(BaseModel):
    """Backbone settings shared by ``dba`` and ``resmask`` (``model.appearance.options``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    widths: list[PositiveInt] = Field(
        default_factory=lambda: [24, 48, 96, 192],
        min_length=1,
        description="Channels of each stage; each stage halves the spatial size.",
    )
    blocks: int = Field(1, ge=1, description="Basic blocks per stage.")
    stem: int = Field(16, ge=1, description="Channels of the stem convolution.")


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (same padding, no bias) - BN - ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallResNet(nn.Module):
    """Stem + stages; :meth:`stage_outputs` returns every stage's feature map (the caller may act between
    stages by running ``stem`` and ``stages[i]`` itself)."""

    def __init__(self, in_channels: int, widths: Sequence[int], blocks: int = 1, stem: int = 16) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, stem)
        stages = []
        c = stem
        for w in widths:
            stages.append(
                nn.Sequential(*(BasicBlock(c if i == 0 else w, w, 2 if i == 0 else 1) for i in range(blocks)))
            )
            c = w
        self.stages = nn.ModuleList(stages)
        self.widths = list(widths)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each stage, shallowest first: [B, widths[i], ceil(S / 2**(i+1)), ...]."""
        h = self.stem(x)
        outs = []
        for stage in self.stages:
            h = stage(h)
            outs.append(h)
        return outs


def check_input_size(name: str, input_size: int | None, n_halvings: int) -> None:
    """:class:`StageError` when ``input_size`` cannot be halved ``n_halvings`` times to at least 1 pixel."""
    if input_size is not None and input_size < 2**n_halvings:
        raise StageError(
            f"{name}: input size {input_size} px is smaller than 2**{n_halvings} ({n_halvings} stages halve it each)"
        )
