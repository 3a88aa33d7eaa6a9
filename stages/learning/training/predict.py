"""Prediction: class probabilities of one network (:func:`predict_proba`) or the mean of an ensemble's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stages.errors import StageError
from stages.learning.models import TwoStream
from stages.learning.training.dataset import ArrayDataset, stream_inputs, to_tensors
from stages.learning.training.precision import autocast

EXACT_CHUNK = 16
"""Sequences per network call in exact mode: every call has this one shape (the last chunk is padded with copies
of its first sequence), so the same kernels run on every sequence wherever it sits in a batch."""


@torch.no_grad()
def predict_proba(
    model: TwoStream,
    data: ArrayDataset | tuple,
    batch_size: int = 128,
    device: str = "cpu",
    exact: bool = True,
    precision: str = "float32",
) -> np.ndarray:
    """Class probabilities [N, K] float64 (softmax of ``model.prediction_key``), eval mode, no gradient.

    ``data``: an :class:`ArrayDataset` or a tuple (appearance [N, C, S, S], trajectory [N, L, 68, 2]).
    ``batch_size`` sequences are copied to ``device`` at a time. With ``exact`` (default) the network then runs
    on chunks of :data:`EXACT_CHUNK` sequences, every chunk of that one shape (the last padded), so a sequence's
    probabilities depend only on its own inputs and the weights: bit-identical whatever the batch size, order or
    other sequences in the call (a network's samples do not mix, and BLAS kernels chosen by batch shape round
    differently, ~1e-7, which the fixed shape rules out). ``exact=False`` runs whole batches (faster on a GPU,
    equal to ~1e-6). ``precision``: the forward pass in ``float32`` or under ``bfloat16`` autocast (a resolved
    :class:`~stages.learning.models.config.TrainConfig` precision; logits are made float32 before the softmax).
    The model is moved to ``device``; its train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise StageError(f"batch_size must be >= 1; got {batch_size}")
    app_all, traj_all = (data.appearance, data.trajectory) if isinstance(data, ArrayDataset) else data[:2]
    if len(app_all) != len(traj_all):
        raise StageError(f"{len(app_all)} appearance inputs but {len(traj_all)} trajectories")
    was_training = model.training
    model.to(device).eval()
    chunks = [np.zeros((0, int(model.build_args.get("n_classes", 0))), dtype=np.float64)]
    try:
        for start in range(0, len(app_all), batch_size):
            sl = slice(start, start + batch_size)
            app, traj = to_tensors((app_all[sl], traj_all[sl]), device)
            step = EXACT_CHUNK if exact else len(app)
            for i in range(0, len(app), step):
                n = min(step, len(app) - i)
                inputs = [_padded(x[i : i + n], step if exact else n) for x in (app, traj)]
                with autocast(precision, device):
                    logits = model(*stream_inputs(model, *inputs))[model.prediction_key][:n]
                chunks.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _padded(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` [n, ...] grown to ``rows`` rows with copies of its first row (a real input: no degenerate padding)."""
    if len(x) >= rows:
        return x
    return torch.cat([x, x[:1].expand(rows - len(x), *x.shape[1:])])


def ensemble_proba(
    models: Sequence[TwoStream],
    data: ArrayDataset | tuple,
    batch_size: int = 128,
    device: str = "cpu",
    precision: str = "float32",
) -> np.ndarray:
    """The mean of :func:`predict_proba` over ``models`` (an ensemble, or one model): [N, K] float64."""
    if not models:
        raise StageError("an ensemble needs at least one model")
    return np.mean([predict_proba(m, data, batch_size, device, precision=precision) for m in models], axis=0)
