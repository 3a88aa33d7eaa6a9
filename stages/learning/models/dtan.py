"""DTAN, the appearance network of DTAGN (Jung et al., ICCV 2015): a few stacked frames -> two
(5x5 conv - 2x2 max-pool) blocks of 64 filters -> FC 500 -> classifier.

Ours: valid (unpadded) 5x5 convs as in the paper; BatchNorm replaces its local response normalisation and sits
after the pooling (conv - pool - BN - ReLU, equivalent and cheaper); dropout before the classifier. At S = 64
the maps are 60 -> 30 -> 26 -> 13 pixels, so FC 500 sees 64 * 13 * 13 features (5.4 M weights, as in DTAN).

The whole DTAGN (appearance + geometry networks jointly fine-tuned with three softmax losses, the summed logits
predicting) is one config::

    model:
      streams: fused
      appearance: {name: dtan}                 # options: {channels: [64, 64], kernel: 5, fc: 500}
      geometry: {name: flat, flat_hidden: [100, 600]}
      fusion: sum
      joint_loss: true                         # CE(appearance) + CE(geometry) + CE(fused)
      input: {appearance: last_k, k: 3, size: 64}

DTAGN pre-trains each network before the joint fine-tuning; here the joint loss trains both networks (and their
sum) from scratch in one run, which gives each network its own supervised signal from the first step.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from stages.errors import StageError
from stages.learning.models.config import AppearanceConfig
from stages.learning.models.registry import BuildContext, parse_options, register_model
from stages.learning.models.skipnet import InputNorm


class DtanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    channels: list[PositiveInt] = Field(default_factory=lambda: [64, 64], min_length=1, description="Filters per conv.")
    kernel: int = Field(5, ge=1, description="Conv kernel side (valid convolution).")
    fc: int = Field(500, ge=1, description="Width of the hidden FC layer.")


def dtan_map_size(input_size: int, n_blocks: int, kernel: int) -> int:
    """Side of the last feature map: each block is a valid ``kernel`` conv then a 2x2 pool (floor)."""
    s = input_size
    for _ in range(n_blocks):
        s = (s - kernel + 1) // 2
    return s


class DTAN(nn.Module):
    """Input ``x`` [B, C, S, S] in [0, 1] -> logits [B, n_classes]; built for one S (the FC layer fixes it)."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        input_size: int,
        channels: list[int] | tuple[int, ...] = (64, 64),
        kernel: int = 5,
        fc: int = 500,
        dropout: float = 0.3,
        normalize: str = "fixed",
    ) -> None:
        super().__init__()
        side = dtan_map_size(input_size, len(channels), kernel)
        if side < 1:
            raise StageError(
                f"dtan: input size {input_size} px is too small for {len(channels)} blocks of {kernel}x{kernel} "
                "valid convolution + 2x2 pooling"
            )
        self.input_size = input_size
        self.norm = InputNorm(normalize)
        layers: list[nn.Module] = []
        c = in_channels
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(out)]
            layers.append(nn.ReLU(inplace=True))
            c = out
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, fc), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fc, n_classes)
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FC feature [B, fc]."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise StageError(f"dtan was built for {self.input_size} px inputs; got {list(x.shape[-2:])}")
        h = self.convs(self.norm(x).contiguous(memory_format=torch.channels_last))
        return self.fc(h.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


@register_model("appearance", name="dtan")
def build_dtan(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """DTAGN's appearance network: two 5x5x64 conv + pool blocks, FC 500 (pair with geometry 'flat')."""
    opts = parse_options(cfg, DtanOptions, "dtan")
    return DTAN(
        ctx.in_channels, ctx.n_classes, ctx.input_size, opts.channels, opts.kernel, opts.fc, cfg.dropout, cfg.normalize
    )
