"""The per-sequence results of preprocessing: what the cache stores and what the models read.

One code path builds them (:mod:`stages.preprocess.sequence`), for training and for prediction alike:
:class:`LandmarkArrays` (the landmarks level, also what a failed sequence is described by) and
:class:`SequenceRecord` (every level of a sequence that succeeded). :class:`SequenceStatus` says how a sequence
(or a prediction input) ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum

import numpy as np


class SequenceStatus(str, Enum):
    """How one sequence or prediction input ended: ``ok``, or why it has no result.

    The values are the strings written to (and read back from) index.parquet, failures.csv, excluded.csv,
    predictions, timelines and summaries: never change one. A member equals, hashes like and prints as its value
    (``f"{s}" == str(s) == s.value`` on every Python), so rows read back from files compare with it as they are.
    """

    OK = "ok"
    # the sequence itself (stages.preprocess.sequence)
    UNREADABLE = "unreadable"  # a file is missing or cannot be decoded
    TOO_SHORT = "too_short"  # fewer readable frames than min_frames
    NO_FACE = "no_face"  # no face in any kept frame
    LOW_FACE_RATIO = "low_face_ratio"  # a face in fewer than min_face_ratio of the kept frames (or windows)
    # the run around it (pipeline)
    FAILED = "failed"  # preprocessing worked but the record cannot become model input
    ERROR = "error"  # an unexpected exception or a crashed worker (predict retries it on resume)
    TIMEOUT = "timeout"  # ran past ray.item_timeout on a worker (predict retries it on resume)
    NOT_PREPROCESSED = "not_preprocessed"  # labelled in the manifest, absent from the preprocess index
    NO_FACE_FRAME = "no_face_frame"  # a failures.csv row: one frame without a face (its sequence may be ok)

    __str__ = str.__str__
    __format__ = str.__format__


@dataclass(frozen=True, eq=False)
class LandmarkArrays:
    """The per-frame landmarks of one sequence, in frame order (ascending source index). ``T`` = frames kept by
    frame selection (0 when none could be read).

    - ``frame_indices`` [T] int64: 0-based indices into the source (frame list or video).
    - ``timestamps`` [T] float64: seconds; a video's from each frame's presentation time stamp, counted from its
      first displayed frame (true for variable frame rates); frame folders' index / the configured fps.
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

    - ``frame_indices``, ``timestamps``, ``landmarks``, ``success``, ``confidence``: as in
      :class:`LandmarkArrays` (the landmarks level it was built from).
    - ``aligned`` [T, S, S] (grey) or [T, S, S, 3] (RGB) uint8: aligned face crops; zeros where no face.
    - ``aligned_landmarks`` [T, 68, 2] float32: landmarks in crop pixels; NaN where no face.
    - ``trajectory`` [L, 68, 2] float32: normalised displacements from the first (neutral) frame, resampled to
      the configured length ``L``.
    - ``status``: a :class:`SequenceStatus` (``ok``, ``no_face``, ``unreadable``, ``too_short``...); ``detail``: free
      text.
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
    status: str = SequenceStatus.OK
    detail: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.frame_indices))

    @property
    def face_ratio(self) -> float:
        """Fraction of kept frames in which a face was found."""
        return float(self.success.mean()) if len(self.success) else 0.0
