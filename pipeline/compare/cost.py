"""Model size figures of the comparison table: parameters and multiply-accumulates of one forward pass."""

from __future__ import annotations

import math

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not), buffers excluded."""
    return int(sum(p.numel() for p in model.parameters()))


def _grid_sample_flops(x_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.grid_sampler_2d`` (``F.grid_sample``), which torch's table leaves out: bilinear
    interpolation weighs 4 source pixels per output value (4 multiply-accumulates = 8 FLOPs); nearest and
    bicubic are counted the same way, an approximation."""
    return 8 * math.prod(out_shape)


def _affine_grid_flops(theta_shape, size, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.affine_grid_generator`` (``F.affine_grid``): each (x, y) of the [N, H, W, 2] grid is a
    row of a [2, 3] matrix times (x, y, 1), 3 multiply-accumulates."""
    return 6 * math.prod(out_shape)


MAC_FORMULAS = {
    torch.ops.aten.grid_sampler_2d: _grid_sample_flops,
    torch.ops.aten.affine_grid_generator: _affine_grid_flops,
}
"""FLOP formulas added to torch's own table (:mod:`torch.utils.flop_counter`) for ops our networks use."""


def count_macs(model: nn.Module, app: torch.Tensor | None, traj: torch.Tensor | None = None) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on the given batch: FLOPs counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`, halved (one MAC = 2 FLOPs).

    Counted: every convolution (output elements x in_channels / groups x kernel size), matrix product (Linear:
    output elements x in_features; ``matmul``/``bmm``), attention, and resampling (``F.affine_grid``: 3 MACs per
    grid coordinate; ``F.grid_sample``: 4 per output value), which is pcnn's region crops (see
    :data:`MAC_FORMULAS`). The hook counter this replaced saw only Conv and Linear layers; the figures differ
    for pcnn alone (+0.1%). Not counted: biases, normalisation,
    pooling, activations, nearest-neighbour upsampling and other element-wise arithmetic. A
    :class:`~stages.learning.models.TwoStream` gets ``model(app, traj)``, anything else ``model(app)``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=MAC_FORMULAS)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            if hasattr(model, "prediction_key"):
                model(app, traj)
            else:
                model(app)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)
