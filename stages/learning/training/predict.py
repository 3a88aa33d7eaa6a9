"""Prediction: class probabilities of one network (:func:`predict_proba`) or the mean of an ensemble's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stages.errors import StageError
from stages.learning.models import TwoStream
from stages.learning.training.dataset import ArrayDataset, stream_inputs, to_tensors


@torch.no_grad()
def predict_proba(
    model: TwoStream,
    data: ArrayDataset | tuple,
    batch_size: int = 128,
    device: str = "cpu",
    exact: bool = True,
) -> np.ndarray:
    """Class probabilities [N, K] float64 (softmax of ``model.prediction_key``), eval mode, no gradient.

    ``data``: an :class:`ArrayDataset` or a tuple (appearance [N, C, S, S], trajectory [N, L, 68, 2]).
    ``batch_size`` sequences are copied to ``device`` at a time. With ``exact`` (default) the network then
    runs on one sequence at a time, so a sequence's probabilities depend only on its own inputs and the
    weights: bit-identical whatever the batch size, order or other sequences in the call (BLAS kernels round
    differently for different batch shapes, ~1e-7). ``exact=False`` runs whole batches (faster on a GPU,
    equal to ~1e-6). The model is moved to ``device``; its train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise StageError(f"batch_size must be >= 1; got {batch_size}")
    app_all, traj_all = (data.appearance, data.trajectory) if isinstance(data, ArrayDataset) else data[:2]
    if len(app_all) != len(traj_all):
        raise StageError(f"{len(app_all)} appearance inputs but {len(traj_all)} trajectories")
    step = 1 if exact else batch_size
    was_training = model.training
    model.to(device).eval()
    chunks = [np.zeros((0, int(model.build_args.get("n_classes", 0))), dtype=np.float64)]
    try:
        for start in range(0, len(app_all), batch_size):
            sl = slice(start, start + batch_size)
            app, traj = to_tensors((app_all[sl], traj_all[sl]), device)
            for i in range(0, len(app), step):
                inputs = stream_inputs(model, app[i : i + step], traj[i : i + step])
                logits = model(*inputs)[model.prediction_key]
                chunks.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def ensemble_proba(
    models: Sequence[TwoStream], data: ArrayDataset | tuple, batch_size: int = 128, device: str = "cpu"
) -> np.ndarray:
    """The mean of :func:`predict_proba` over ``models`` (an ensemble, or one model): [N, K] float64."""
    if not models:
        raise StageError("an ensemble needs at least one model")
    return np.mean([predict_proba(m, data, batch_size, device) for m in models], axis=0)
