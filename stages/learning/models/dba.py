"""DBA-Net-style densely backward attention (after Hua et al. 2020) on a small ResNet.

The backbone (:mod:`stages.learning.models.resnet_blocks`, four stages by default) gives maps F_1..F_n (shallow to
deep).
Each stage has a squeeze-and-excitation vector ``v_i = sigmoid(W2 relu(W1 gap(F_i)))`` in (0, 1)^{c_i}. Stage i
is re-weighted by ``a_i = sigmoid(P_i [v_i, v_{i+1}, ..., v_n])``, P_i a 1x1 projection (a linear map) of the
concatenation of its own and all HIGHER stages' vectors: deep, semantic stages tell shallow ones which channels
matter ("densely backward"). Every re-weighted stage is globally average-pooled (``gap(F_i * a_i) =
gap(F_i) * a_i``, computed in that cheaper form) and all are concatenated -> dropout -> linear classifier.

The attention does not feed back into the backbone (stage i + 1 is computed from the un-weighted F_i), so one
forward pass suffices. Options (``model.appearance.options``): widths, blocks, stem (the backbone, see
:class:`stages.learning.models.resnet_blocks.ResNetOptions`), reduction (SE bottleneck).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from stages.learning.models.config import AppearanceConfig
from stages.learning.models.registry import BuildContext, parse_options, register_model
from stages.learning.models.resnet_blocks import ResNetOptions, SmallResNet, check_input_size
from stages.learning.models.skipnet import InputNorm


class DbaOptions(ResNetOptions):
    reduction: int = Field(4, ge=1, description="SE bottleneck: hidden width = max(channels // reduction, 4).")


class SqueezeExcite(nn.Module):
    """Pooled feature [B, c] -> excitation vector [B, c] in (0, 1)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(pooled))


class DBANet(nn.Module):
    """Input ``x`` [B, C, S, S] in [0, 1] -> logits [B, n_classes]."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: list[int] | tuple[int, ...] = (24, 48, 96, 192),
        blocks: int = 1,
        stem: int = 16,
        reduction: int = 4,
        dropout: float = 0.3,
        normalize: str = "fixed",
    ) -> None:
        super().__init__()
        self.norm = InputNorm(normalize)
        self.backbone = SmallResNet(in_channels, widths, blocks, stem)
        self.se = nn.ModuleList(SqueezeExcite(w, reduction) for w in widths)
        self.project = nn.ModuleList(nn.Linear(sum(widths[i:]), widths[i]) for i in range(len(widths)))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sum(widths), n_classes)
        self.to(memory_format=torch.channels_last)

    def attention(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(pooled stage features gap(F_i) [B, c_i], backward attention a_i [B, c_i]), shallow first."""
        maps = self.backbone.stage_outputs(self.norm(x).contiguous(memory_format=torch.channels_last))
        pooled = [f.mean(dim=(2, 3)) for f in maps]
        vectors = [se(p) for se, p in zip(self.se, pooled, strict=True)]
        att = [torch.sigmoid(proj(torch.cat(vectors[i:], dim=1))) for i, proj in enumerate(self.project)]
        return pooled, att

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Re-weighted pooled features gap(F_i * a_i) [B, c_i] per stage, shallow first."""
        pooled, att = self.attention(x)
        return [p * a for p, a in zip(pooled, att, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.cat(self.features(x), dim=1)))


@register_model("appearance", name="dba")
def build_dba(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
    """Densely backward attention: SE vectors of deeper ResNet stages re-weight shallower ones; all pooled."""
    opts = parse_options(cfg, DbaOptions, "dba")
    check_input_size("dba", ctx.input_size, len(opts.widths))
    return DBANet(
        ctx.in_channels, ctx.n_classes, opts.widths, opts.blocks, opts.stem, opts.reduction, cfg.dropout, cfg.normalize
    )
