"""The arithmetic of the forward passes: ``TrainConfig.precision`` resolved on a device for training, the precision a
trained model predicts in, and their autocast."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

EMULATED = (
    "train.precision is bfloat16, but this CPU does not compute bfloat16 natively (no AVX512-BF16 or AMX): it is "
    "emulated, several times slower than float32; train.precision=auto chooses float32 here"
)


def bfloat16_is_native(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA's bf16 support; on a CPU, oneDNN's bf16 support (AVX512-BF16
    or AMX). Elsewhere bfloat16 is emulated, several times slower than float32 (measured in BENCHMARKS.md)."""
    if torch.device(device).type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: str) -> str:
    """``TrainConfig.precision`` on ``device``: ``float32`` or ``bfloat16`` as given (bfloat16 where it is only
    emulated with a warning); ``auto`` is ``bfloat16`` where the device computes it natively, else ``float32``."""
    if precision == "float32":
        return precision
    native = bfloat16_is_native(device)
    if precision == "auto":
        return "bfloat16" if native else "float32"
    if not native:
        _warn_emulated()
    return precision


@functools.cache
def _warn_emulated() -> None:
    """The warning that bfloat16 is emulated, once per process (every fold and member resolves the precision)."""
    log.warning(EMULATED)


def inference_precision(trained: str, device: str) -> str:
    """The precision a model trained in ``trained`` (a ``TrainConfig.precision``) predicts in on ``device``: bfloat16
    where it trained in bfloat16 (or ``auto``) and ``device`` computes bfloat16 natively, else float32. The weights are
    float32 either way, so a bfloat16-trained model predicts in float32 where bfloat16 would only be emulated (its
    probabilities differ from the bfloat16 pass's by bfloat16's rounding: 11 of FER2013's 3,589 PublicTest labels
    changed, accuracy the same; BENCHMARKS.md)."""
    if trained == "float32" or not bfloat16_is_native(device):
        return "float32"
    return "bfloat16"


def autocast(precision: str, device: str | torch.device) -> torch.autocast:
    """bfloat16 autocast on ``device`` when the resolved ``precision`` is ``bfloat16``, else a disabled one."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
