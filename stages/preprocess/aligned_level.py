"""The aligned level of a sequence: face crops and their landmarks made from frames, and what the cache keeps of it.

Still images smaller than their crop (FER2013's and CK+48's 48 px faces aligned at 96 px hold a quarter of the
crop's pixels) keep no crop pixels in the cache: the entry holds the aligned landmarks and, under
:data:`DERIVED`, the level's checksum (:func:`~stages.preprocess.cache_format.checksum` of its crops and
landmarks); a read re-aligns the crops from the source and the cached landmarks (a decode and a warp, ~0.1 ms for a
48 px JPEG), and a level whose checksum differs (a source rewritten under the same name, size and time) makes the
entry count as missing: it is recomputed
(:class:`~stages.preprocess.sequence.SequenceProcessor`). Video frames and larger images keep
their crops: decoding them again would cost more than reading the crops.
"""

from __future__ import annotations

import numpy as np

from stages.errors import StageError
from stages.face_geometry import N_POINTS
from stages.preprocess.align import AlignConfig, align_face
from stages.preprocess.decode import SequenceSource

DERIVED = "derived"
"""Metadata key of an aligned entry that keeps no crops (they are re-aligned from the source on every read): the
checksum of the level it was made with."""


def align_one(image: np.ndarray, points: np.ndarray, ok: bool, cfg: AlignConfig) -> tuple[np.ndarray, np.ndarray]:
    """(crop uint8 [S, S] grey or [S, S, 3], its landmarks float32 [68, 2] in crop pixels) of one frame; a frame
    without a usable face (``ok`` False, or degenerate anchor points) gives a black crop and NaN points."""
    size = cfg.size
    if ok:
        try:
            face = align_face(image, points, cfg)
            return face.image, face.points.astype(np.float32)
        except StageError:  # degenerate anchor points: this frame has no usable face
            pass
    shape = (size, size) if cfg.color == "grey" else (size, size, 3)
    return np.zeros(shape, np.uint8), np.full((N_POINTS, 2), np.nan, np.float32)


def stack_aligned(crops: list[np.ndarray], crop_pts: list[np.ndarray], cfg: AlignConfig) -> dict[str, np.ndarray]:
    """The aligned level: ``aligned`` [F, S, S(, 3)] uint8 and ``aligned_landmarks`` [F, 68, 2] float32."""
    size = cfg.size
    shape = (0, size, size) if cfg.color == "grey" else (0, size, size, 3)
    return {
        "aligned": np.stack(crops) if crops else np.zeros(shape, np.uint8),
        "aligned_landmarks": np.asarray(crop_pts, dtype=np.float32).reshape(-1, N_POINTS, 2),
    }


def keeps_crops(source: SequenceSource, largest: int, cfg: AlignConfig) -> bool:
    """Whether the cache keeps a sequence's crops: yes for video and for images whose largest frame has at least
    a crop's pixels (``largest``, height x width), no for still images smaller than their crop (module doc)."""
    return source.video_path is not None or not 0 < largest < cfg.size**2
