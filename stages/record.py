"""The per-sequence result of preprocessing: what the cache stores and what the models read.

One code path builds it (:mod:`stages.sequence`), for training and for prediction alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SequenceRecord:
    """Preprocessed sequence. ``T`` = frames kept by frame selection, ``S`` = aligned crop size (pixels).

    - ``frame_indices`` [T] int64: 0-based indices into the source (frame list or video).
    - ``timestamps`` [T] float64: seconds from the start of the source (index / fps; frame folders use the
      configured fps).
    - ``landmarks`` [T, 68, 2] float32: (x, y) in source pixels, 0-based, iBUG-68 order; NaN where no face.
    - ``success`` [T] bool: a face and its landmarks were found in that frame.
    - ``confidence`` [T] float32 in [0, 1].
    - ``aligned`` [T, S, S] (grey) or [T, S, S, 3] (RGB) uint8: aligned face crops; zeros where no face.
    - ``aligned_landmarks`` [T, 68, 2] float32: landmarks in crop pixels; NaN where no face.
    - ``trajectory`` [L, 68, 2] float32: normalised displacements from the first (neutral) frame, resampled to
      the configured length ``L``.
    - ``status``: ``ok`` or a failure reason (``no_face``, ``unreadable``, ``too_short``...); ``detail``: free text.
    """

    sequence_id: str
    frame_indices: np.ndarray
    timestamps: np.ndarray
    landmarks: np.ndarray
    success: np.ndarray
    confidence: np.ndarray
    aligned: np.ndarray
    aligned_landmarks: np.ndarray
    trajectory: np.ndarray
    status: str = "ok"
    detail: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.frame_indices))

    @property
    def face_ratio(self) -> float:
        """Fraction of kept frames in which a face was found."""
        return float(self.success.mean()) if len(self.success) else 0.0
