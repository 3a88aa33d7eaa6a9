"""The per-sequence results of preprocessing: what the cache stores and what the models read.

One code path builds them (:mod:`stages.sequence`), for training and for prediction alike:
:class:`LandmarkArrays` (the landmarks level, also what a failed sequence is described by) and
:class:`SequenceRecord` (every level of a sequence that succeeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True, eq=False)
class LandmarkArrays:
    """The per-frame landmarks of one sequence, in frame order (ascending source index). ``T`` = frames kept by
    frame selection (0 when none could be read).

    - ``frame_indices`` [T] int64: 0-based indices into the source (frame list or video).
    - ``timestamps`` [T] float64: seconds from the start of the source (index / fps; frame folders use the
      configured fps).
    - ``landmarks`` [T, 68, 2] float32: (x, y) in source pixels, 0-based, iBUG-68 order; NaN where no face.
    - ``success`` [T] bool: a face and its landmarks were found in that frame.
    - ``confidence`` [T] float32 in [0, 1].

    The cache's ``landmarks`` level stores exactly these five arrays under these names (:meth:`to_arrays`,
    :meth:`from_arrays`). The arrays are shared, not copied: treat them as read-only.
    """

    frame_indices: np.ndarray
    timestamps: np.ndarray
    landmarks: np.ndarray
    success: np.ndarray
    confidence: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The five arrays by field name, as stored in the cache (the arrays themselves, no conversion)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LandmarkArrays:
        """Inverse of :meth:`to_arrays` (other names in ``arrays`` are ignored; a missing one is a KeyError)."""
        return cls(**{f.name: arrays[f.name] for f in fields(cls)})


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
