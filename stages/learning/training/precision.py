"""The arithmetic of training's forward passes: ``TrainConfig.precision`` resolved on a device, and its autocast."""

from __future__ import annotations

import torch


def resolve_precision(precision: str, device: str) -> str:
    """``TrainConfig.precision`` on ``device``: ``float32`` or ``bfloat16`` as given; ``auto`` is ``bfloat16`` where
    the device computes it natively (CPU: oneDNN's bf16 support, i.e. AVX512-BF16 or AMX; CUDA: bf16 support),
    else ``float32``."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "bfloat16" if native else "float32"


def autocast(precision: str, device: str | torch.device) -> torch.autocast:
    """bfloat16 autocast on ``device`` when the resolved ``precision`` is ``bfloat16``, else a disabled one."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
