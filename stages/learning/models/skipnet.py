"""Skip-connection CNN (Verma et al., ICIP 2019): every conv block reaches the classifier through its own FC
layer.

Layer sizes are not published; ours: blocks of 3x3 conv (x ``convs_per_block``) - 2x2 max-pool - BN - ReLU
(pooling before BN/ReLU is equivalent in what it can express and ~40% cheaper on CPU), one block per entry of
``channels``. After every block the feature map is globally average-pooled and passed through that block's own
FC + ReLU (``skip_dim`` wide); the concatenation of all skip features and the last block's pooled feature goes
through dropout into the linear classifier, so low- and mid-level features reach the decision directly.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.errors import StageError
from stages.learning.models.config import AppearanceConfig
from stages.learning.models.registry import BuildContext, register_model

FIXED_MEAN = 0.5
FIXED_STD = 0.25


RANK_STD = (1.0 / 12.0) ** 0.5  # std of the uniform distribution on [0, 1]
INPUT_NORMS = ("fixed", "per_sample", "rank")


class InputNorm(nn.Module):
    """Normalise appearance inputs in [0, 1]: ``fixed`` = (x - 0.5) / 0.25; ``per_sample`` = each sample and
    channel to zero mean and unit std over its pixels; ``rank`` = each pixel replaced by its quantile among its
    sample's and channel's pixels (histogram equalisation: ties share their mean rank), then centred and scaled to
    unit std, so that any increasing change of intensities (gain, contrast, gamma, a camera's response curve)
    gives the same input. Reusable by any appearance network."""

    def __init__(self, mode: str = "fixed", eps: float = 1e-5) -> None:
        super().__init__()
        if mode not in INPUT_NORMS:
            raise StageError(f"unknown input normalisation {mode!r}; expected one of {', '.join(INPUT_NORMS)}")
        self.mode = mode
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed":
            return (x - FIXED_MEAN) / FIXED_STD
        if self.mode == "rank":
            return rank_normalise(x)
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
        return (x - mean) / (std + self.eps)


def rank_normalise(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> the same shape: each pixel's mid-rank quantile within its sample and channel, in (0, 1),
    then ``(q - 0.5) / RANK_STD``. Equal values get equal outputs (the mean of their ranks), so the result is a
    function of the image, not of the pixel order."""
    flat = x.flatten(2).contiguous()
    ordered = flat.sort(dim=-1).values
    below = torch.searchsorted(ordered, flat, side="left")
    upto = torch.searchsorted(ordered, flat, side="right")
    q = (below + upto).to(x.dtype) / (2.0 * flat.shape[-1])
    return ((q - 0.5) / RANK_STD).view_as(x)


class ConvBlock(nn.Sequential):
    """``n_convs`` 3x3 convs (BN-ReLU between them), then 2x2 max-pool, BN, ReLU: halves H and W."""

    def __init__(self, in_channels: int, out_channels: int, n_convs: int = 1) -> None:
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(n_convs):
            layers.append(nn.Conv2d(c, out_channels, 3, padding=1, bias=False))
            if i < n_convs - 1:
                layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            c = out_channels
        layers += [nn.MaxPool2d(2), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class SkipNet(nn.Module):
    """Appearance network. Input ``x`` [B, C, S, S] float32 in [0, 1]; output logits [B, n_classes].

    ``S`` must be at least ``2 ** len(channels)`` (each block halves it, rounding down). Weights are kept
    channels-last (faster convs on CPU).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: list[int] | tuple[int, ...] = (32, 64, 96, 128),
        skip_dim: int = 64,
        dropout: float = 0.3,
        convs_per_block: int = 1,
        normalize: str = "fixed",
        input_size: int | None = None,
        use_skips: bool = True,
    ) -> None:
        super().__init__()
        self.use_skips = use_skips
        if input_size is not None and input_size < 2 ** len(channels):
            raise StageError(
                f"skipnet: input size {input_size} px is smaller than 2**{len(channels)} "
                f"({len(channels)} blocks halve it each)"
            )
        self.norm = InputNorm(normalize)
        blocks, skips = [], []
        c = in_channels
        for out in channels:
            blocks.append(ConvBlock(c, out, convs_per_block))
            skips.append(nn.Sequential(nn.Linear(out, skip_dim), nn.ReLU(inplace=True)) if use_skips else nn.Identity())
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.skips = nn.ModuleList(skips)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear((len(channels) * skip_dim if use_skips else 0) + c, n_classes)
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-block skip features ([B, skip_dim] each, block order; none without skips) and the last block's
        pooled feature."""
        h = self.norm(x).contiguous(memory_format=torch.channels_last)
        skips = []
        for block, skip in zip(self.blocks, self.skips, strict=True):
            h = block(h)
            if self.use_skips:
                skips.append(skip(h.mean(dim=(2, 3))))
        return skips, h.mean(dim=(2, 3))

    def head(self, skips: list[torch.Tensor], last: torch.Tensor) -> torch.Tensor:
        """Classifier on the concatenated features: [B, n_blocks * skip_dim + channels[-1]] -> logits."""
        return self.classifier(self.dropout(torch.cat([*skips, last], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(*self.features(x))


def _build(cfg: AppearanceConfig, ctx: BuildContext, name: str, use_skips: bool) -> SkipNet:
    if cfg.options:
        raise StageError(f"{name} takes no options; got {sorted(cfg.options)}")
    return SkipNet(
        in_channels=ctx.in_channels,
        n_classes=ctx.n_classes,
        channels=cfg.channels,
        skip_dim=cfg.skip_dim,
        dropout=cfg.dropout,
        convs_per_block=cfg.convs_per_block,
        normalize=cfg.normalize,
        input_size=ctx.input_size,
        use_skips=use_skips,
    )


@register_model("appearance", name="skipnet")
def build_skipnet(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """Skip-connection CNN (Verma et al. 2019): each conv block's pooled feature has its own FC to the
    classifier."""
    return _build(cfg, ctx, "skipnet", use_skips=True)


@register_model("appearance", name="plaincnn")
def build_plaincnn(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """The plain-CNN reference: skipnet's conv blocks with no skip connections (only the last block's pooled
    feature reaches the classifier). For the skip-connection ablation."""
    return _build(cfg, ctx, "plaincnn", use_skips=False)
