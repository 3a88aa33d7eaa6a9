"""Landmark motion trajectories: per-frame normalised landmarks, resampled to a fixed length.

Input: aligned landmarks [T, 68, 2] (x, y) crop pixels (any pixel frame works: every normaliser removes
position and scale) and a success flag per frame. Output: [L, 68, 2] float32.

Steps, in order:

1. Fill: frames without success (or with any non-finite point) take values interpolated linearly in time from
   the nearest good frames before and after; frames before the first / after the last good frame copy it.
2. Normalise each frame (``TrajectoryConfig.normalise``, a registry keyed by name):
   - ``nose_std`` (DTAGN): subtract the nose tip (point 30), divide by the spread of the points, i.e.
     the pooled per-coordinate standard deviation ``sqrt((var(x) + var(y)) / 2)`` over the 68 points
     (rotation invariant). ``scale="sequence"`` (default) divides every frame by the median of the
     per-frame spreads, so an opening mouth does not shrink the rest of the face; ``scale="frame"``
     divides each frame by its own (DTAGN as published).
   - ``procrustes``: each frame is similarity-aligned to the canonical template (stages.face_geometry) on the
     stable anchor points; units: outer-eye-corner distance.
3. Smooth in time with a Gaussian of ``smooth_sigma`` frames (source frames, before resampling; 0 = off).
4. Reference: ``first`` subtracts the first frame (sequences start neutral), so identity and face shape
   drop out and the trajectory holds displacements; ``none`` keeps the normalised positions.
5. Resample to ``length`` steps by linear interpolation over normalised time [0, 1] (frame t of T sits at
   t / (T - 1)); a single frame is repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stages.errors import StageError
from stages.face_geometry import (
    ANCHOR_INDICES,
    N_POINTS,
    NOSE_TIP,
    TEMPLATE,
    similarity_transform,
    transform_points,
)


class TrajectoryConfig(BaseModel):
    """How landmark sequences become fixed-length motion trajectories for the geometry network."""

    model_config = ConfigDict(extra="forbid")

    length: int = Field(16, ge=2, le=4096, description="Number of resampled time steps L.")
    normalise: Literal["procrustes", "nose_std"] = Field(
        "nose_std",
        description="Per-frame normalisation: 'nose_std' (DTAGN) subtracts the nose tip (point 30) and "
        "divides by the spread of the points (unitless); 'procrustes' similarity-aligns each frame to the "
        "canonical template (units: outer-eye-corner distance).",
    )
    scale: Literal["sequence", "frame"] = Field(
        "sequence",
        description="nose_std only: divide by the median spread over the sequence ('sequence', so mouth "
        "motion does not leak into other points) or by each frame's own spread ('frame', as DTAGN).",
    )
    anchors: Literal["eyes_nose", "inner"] = Field(
        "eyes_nose",
        description="procrustes only: which stable points fit each frame to the template (see AlignConfig).",
    )
    smooth_sigma: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Temporal Gaussian smoothing: standard deviation in source frames (0 = off).",
    )
    reference: Literal["first", "none"] = Field(
        "first",
        description="'first': displacements from the first (neutral) frame; 'none': normalised positions.",
    )


def fill_missing_frames(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace frames where ``valid`` is False by linear interpolation in time between the nearest valid
    frames (edges: the nearest valid frame). ``points`` [T, 68, 2]; at least one valid frame.
    Returns float64 [T, 68, 2].
    """
    pts = np.asarray(points, dtype=np.float64)
    good = np.flatnonzero(valid)
    if good.size == len(pts):
        return pts.copy()
    t = np.arange(len(pts), dtype=np.float64)
    flat = pts.reshape(len(pts), -1)
    out = np.empty_like(flat)
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(t, good.astype(np.float64), flat[good, c])
    return out.reshape(pts.shape)


def _spread(points: np.ndarray) -> np.ndarray:
    """Pooled per-coordinate standard deviation of each frame's points: [T, 68, 2] -> [T]."""
    centred = points - points.mean(axis=1, keepdims=True)
    return np.sqrt((centred**2).mean(axis=(1, 2)))


def _normalise_nose_std(points: np.ndarray, cfg: TrajectoryConfig) -> np.ndarray:
    spread = _spread(points)
    scale = np.full_like(spread, np.median(spread)) if cfg.scale == "sequence" else spread
    if (scale <= 1e-9).any():
        raise StageError("trajectory: landmarks collapse to a single point; cannot normalise their scale")
    return (points - points[:, NOSE_TIP : NOSE_TIP + 1, :]) / scale[:, None, None]


def _normalise_procrustes(points: np.ndarray, cfg: TrajectoryConfig) -> np.ndarray:
    idx = ANCHOR_INDICES[cfg.anchors]
    out = np.empty_like(points)
    for t, frame in enumerate(points):
        out[t] = transform_points(frame, similarity_transform(frame[idx], TEMPLATE[idx]))
    return out


NORMALISERS: dict[str, Callable[[np.ndarray, TrajectoryConfig], np.ndarray]] = {
    "nose_std": _normalise_nose_std,
    "procrustes": _normalise_procrustes,
}


def resample(sequence: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of [T, ...] onto ``length`` evenly spaced points of normalised time [0, 1]."""
    seq = np.asarray(sequence, dtype=np.float64)
    n = len(seq)
    if n == 1:
        return np.repeat(seq, length, axis=0)
    pos = np.linspace(0.0, n - 1.0, length)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    w = (pos - i0).reshape((-1,) + (1,) * (seq.ndim - 1))
    return (1.0 - w) * seq[i0] + w * seq[i0 + 1]


def compute_trajectory(aligned_points: np.ndarray, success: np.ndarray, cfg: TrajectoryConfig) -> np.ndarray:
    """[T, 68, 2] aligned landmarks + [T] success -> [L, 68, 2] float32 trajectory (see the module docstring).

    Raises StageError("no face in any frame") when no frame has success and finite landmarks.
    """
    pts = np.asarray(aligned_points, dtype=np.float64)
    ok = np.asarray(success, dtype=bool).reshape(-1)
    if pts.ndim != 3 or pts.shape[1:] != (N_POINTS, 2) or ok.shape != (len(pts),):
        raise StageError(
            f"trajectory expects [T, {N_POINTS}, 2] landmarks and [T] success, got {pts.shape} and {ok.shape}"
        )
    valid = ok & np.isfinite(pts).all(axis=(1, 2))
    if not valid.any():
        raise StageError("no face in any frame")
    filled = fill_missing_frames(pts, valid)
    norm = NORMALISERS[cfg.normalise](filled, cfg)
    if cfg.smooth_sigma > 0 and len(norm) > 1:
        from scipy.ndimage import gaussian_filter1d  # here: the preprocess driver imports this module, never calls it

        norm = gaussian_filter1d(norm, sigma=cfg.smooth_sigma, axis=0, mode="nearest")
    if cfg.reference == "first":
        norm = norm - norm[:1]
    return resample(norm, cfg.length).astype(np.float32)
