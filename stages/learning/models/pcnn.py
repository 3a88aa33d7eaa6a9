"""PCNN-style perception CNN (after Tian et al. 2025): five parallel local networks on landmark-cut face regions
(both eyes with brows, both cheeks, mouth) and a global network on the whole face, fused before the classifier.

Input: the appearance tensor [B, C + 5, S, S] whose LAST five channels are the region masks of
:mod:`stages.learning.models.face_regions` (rendered from the peak frame's aligned landmarks by
:func:`stages.learning.inputs.extras.append_extras`; its registration declares this with ``input_extras``). The first C
channels are the usual stacked frames. Each mask's bounding box is cut out of the frames and resampled to a
``patch_size`` square (default 3/8 of S: 24 px at S = 64); each region has its own small CNN (3x3 conv -
2x2 max-pool - BN - ReLU blocks, global average pooling; the five run as one grouped convolution, weights not
shared); the global CNN sees the whole face. Their pooled
features are concatenated -> FC - ReLU -> dropout -> linear.

Not reproduced: PCNN's two-phase loss (the two-stream joint loss plays that role here) and its exact layer
sizes (not public here). Options (``model.appearance.options``): global_channels, local_channels, patch_size,
fusion_dim.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from stages.errors import StageError
from stages.learning.models.config import AppearanceConfig
from stages.learning.models.face_regions import N_REGIONS, boxes_from_masks, crop_patches
from stages.learning.models.registry import BuildContext, parse_options, register_model
from stages.learning.models.skipnet import ConvBlock, InputNorm


class PcnnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    global_channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 96], min_length=1)
    local_channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 48], min_length=1)
    patch_size: int | None = Field(None, ge=4, description="Side of each region patch, px; None = 3/8 of S.")
    fusion_dim: int = Field(128, ge=1, description="Width of the FC layer that fuses all branches.")


def _branch(in_channels: int, channels: list[int]) -> nn.Sequential:
    blocks, c = [], in_channels
    for out in channels:
        blocks.append(ConvBlock(c, out))
        c = out
    return nn.Sequential(*blocks)


class LocalNets(nn.Module):
    """``n`` independent CNNs (3x3 conv - 2x2 max-pool - BN - ReLU blocks, global average pooling), one per
    region, run as ONE grouped convolution per block (groups = n: no weight is shared between regions; the
    same maths as n separate networks, ~2x faster on CPU than n small calls).

    Input [B, n, C, P, P] -> features [B, n, channels[-1]].
    """

    def __init__(self, n: int, in_channels: int, channels: list[int]) -> None:
        super().__init__()
        self.n = n
        layers: list[nn.Module] = []
        c = in_channels
        for out in channels:
            layers += [
                nn.Conv2d(n * c, n * out, 3, padding=1, groups=n, bias=False),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(n * out),
                nn.ReLU(inplace=True),
            ]
            c = out
        self.body = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, c, p, _ = patches.shape
        h = self.body(patches.reshape(b, n * c, p, p).contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
        return h.reshape(b, n, self.out_channels)


class PCNN(nn.Module):
    """Input ``x`` [B, image_channels + 5, S, S] in [0, 1] (masks last); output logits [B, n_classes]."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        input_size: int,
        global_channels: list[int] | tuple[int, ...] = (32, 64, 96),
        local_channels: list[int] | tuple[int, ...] = (16, 32, 48),
        patch_size: int | None = None,
        fusion_dim: int = 128,
        dropout: float = 0.3,
        normalize: str = "fixed",
    ) -> None:
        super().__init__()
        self.image_channels = in_channels - N_REGIONS
        if self.image_channels < 1:
            raise StageError(
                f"pcnn needs its {N_REGIONS} face-region mask channels appended to the appearance input "
                f"(model_extras 'face_regions'); got only {in_channels} channel(s)"
            )
        self.patch_size = patch_size or max(8, round(0.375 * input_size))
        for what, side, chans in (("input", input_size, global_channels), ("patch", self.patch_size, local_channels)):
            if side < 2 ** len(chans):
                raise StageError(f"pcnn: {what} size {side} px is smaller than 2**{len(chans)} (blocks halve it)")
        self.norm = InputNorm(normalize)
        self.global_net = _branch(self.image_channels, list(global_channels))
        self.local_nets = LocalNets(N_REGIONS, self.image_channels, list(local_channels))
        width = global_channels[-1] + N_REGIONS * local_channels[-1]
        self.fusion = nn.Sequential(nn.Linear(width, fusion_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fusion_dim, n_classes)
        self.to(memory_format=torch.channels_last)  # faster convs and pooling on CPU

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames [B, C, S, S], region masks [B, 5, S, S])."""
        if x.shape[1] != self.image_channels + N_REGIONS:
            raise StageError(
                f"pcnn was built for {self.image_channels} image + {N_REGIONS} mask channels; got {x.shape[1]}"
            )
        return x[:, : self.image_channels], x[:, self.image_channels :]

    def regions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes [B, 5, 4] pixel edges, patches [B, 5, C, P, P] of the NORMALISED frames)."""
        frames, masks = self.split(x)
        boxes = boxes_from_masks(masks)
        return boxes, crop_patches(self.norm(frames), boxes, self.patch_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused feature [B, fusion_dim]."""
        frames, _ = self.split(x)
        _, patches = self.regions(x)
        glob = self.global_net(self.norm(frames).contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
        local = self.local_nets(patches).flatten(1)  # region-major
        return self.fusion(torch.cat([glob, local], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


@register_model("appearance", name="pcnn", input_extras=("face_regions",))  # appended channels (model_extras)
def build_pcnn(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """Perception CNN: local CNNs on five landmark-cut regions + a global CNN, fused (needs region masks)."""
    opts = parse_options(cfg, PcnnOptions, "pcnn")
    return PCNN(
        ctx.in_channels,
        ctx.n_classes,
        ctx.input_size,
        opts.global_channels,
        opts.local_channels,
        opts.patch_size,
        opts.fusion_dim,
        cfg.dropout,
        cfg.normalize,
    )
