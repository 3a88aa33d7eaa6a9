"""Sliding windows over one input: their bounds in seconds, each window's record and its timeline row."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.preprocess.decode import select_indices
from stages.preprocess.sequence import SequenceConfig
from stages.preprocess.trajectory import compute_trajectory
from stages.record import SequenceRecord, SequenceStatus


@dataclass
class Windows:
    """Window starts and ends (seconds) and, per window, its frame positions into the input's record."""

    starts: np.ndarray
    ends: np.ndarray
    members: list[np.ndarray] = field(default_factory=list)


def window_bounds(timestamps: np.ndarray, window: float, stride: float, frame_step: float) -> Windows:
    """Windows [start, start + window) seconds over frames at ``timestamps``: starts at 0, every ``stride``
    seconds, the last one flush with the end (last timestamp + one frame step) so the tail is covered; one
    window over everything when the input is shorter than ``window``."""
    end = float(timestamps[-1]) + frame_step if len(timestamps) else 0.0
    if end <= window:
        starts, ends = np.array([0.0]), np.array([end])
    else:
        starts = np.arange(0.0, end - window + 1e-9, stride)
        if starts[-1] + window < end - 1e-9:
            starts = np.append(starts, end - window)
        ends = starts + window
    eps = 1e-9
    members = [
        np.flatnonzero((timestamps >= s - eps) & (timestamps < e - eps)) for s, e in zip(starts, ends, strict=True)
    ]
    return Windows(starts, ends, members)


def window_record(record: SequenceRecord, positions: np.ndarray, seq: SequenceConfig) -> SequenceRecord:
    """The window's frames (``positions`` into ``record``) after the training frame selection of ``seq``, with
    its own trajectory (what processing the window as a sequence of its own gives, up to landmark tracking
    across its first frame)."""
    keep = positions[select_indices(len(positions), None, seq.frames)]
    aligned_landmarks = record.aligned_landmarks[keep]
    trajectory = compute_trajectory(aligned_landmarks, record.success[keep], seq.trajectory)
    return SequenceRecord(
        sequence_id=record.sequence_id,
        frame_indices=record.frame_indices[keep],
        timestamps=record.timestamps[keep],
        landmarks=record.landmarks[keep],
        success=record.success[keep],
        confidence=record.confidence[keep],
        aligned=record.aligned[keep],
        aligned_landmarks=aligned_landmarks,
        trajectory=trajectory,
    )


def timeline_row(
    bounds: tuple[float, float],
    status: SequenceStatus,
    reason: str,
    success: np.ndarray,
    probs: np.ndarray | None,
    classes: list[str],
) -> dict:
    """One window's timeline row: ``window_start, window_end`` (s), status, n_frames and face_ratio of its
    selected frames (``success``: their face flags), label, confidence, ``p_<class>`` (NaN without ``probs``),
    reason."""
    return {
        "window_start": round(float(bounds[0]), 4),
        "window_end": round(float(bounds[1]), 4),
        "status": status,
        "n_frames": int(len(success)),
        "face_ratio": round(float(success.mean()) if len(success) else 0.0, 4),
        "label": classes[int(np.argmax(probs))] if probs is not None else "",
        "confidence": float(np.max(probs)) if probs is not None else float("nan"),
        **{f"p_{c}": float(probs[i]) if probs is not None else float("nan") for i, c in enumerate(classes)},
        "reason": reason,
    }
