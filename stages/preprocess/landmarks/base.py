"""Landmark types, the backend protocols, the landmark config and the point/box geometry they share.

Conventions: 68 points in iBUG order, ``(x, y)`` in source-image pixels, 0-based (pixel centres at integers);
boxes are ``(left, top, right, bottom)`` in the same pixels; confidences lie in [0, 1].

Every landmark result, whatever its backend (a detector's prediction or a dataset's own file), must pass
:func:`landmark_problem` before it counts as a face: finite, spread over at least ``MIN_LANDMARK_SPREAD`` pixels,
within ``FRAME_MARGIN`` frame sizes of the frame, and centred inside it. :func:`checked` turns a result that fails
into a failed one whose note (``"landmarks: ..."``, :data:`LANDMARK_NOTE`) says what is wrong.

The detect-then-track logic every detector-based backend shares lives in :mod:`stages.preprocess.landmarks.tracker`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import numpy as np
from pydantic import ConfigDict, Field

from stages.errors import StageError
from stages.face_geometry import (
    N_POINTS,
    eye_distance,
    similarity_transform,
    transform_points,
)
from stages.later_settings import LaterSettings

Box = tuple[float, float, float, float]

STABLE_POINTS = np.arange(17, 48)  # brows, nose, eyes: the reference for box calibration


class LandmarkConfig(LaterSettings):
    """Which landmark backend runs and how it detects and tracks faces."""

    # tight_crops is left out of dumps while off. small_frame_search is always dumped: its default changed how
    # small frames are searched, so landmarks cached before it existed must not be reused.
    AS_BEFORE: ClassVar[dict[str, object]] = {"tight_crops": False}

    model_config = ConfigDict(extra="forbid")

    backend: str = Field("dlib", description="registry key of the backend: 'dlib', 'fan' or 'provided'")
    detector: Literal["hog", "mmod"] = Field(
        "hog", description="dlib face detector: 'hog' (fast, frontal) or 'mmod' (CNN, slower, more poses)"
    )
    upsample: int = Field(0, ge=0, le=3, description="dlib detector upsampling passes (each doubles the size)")
    min_face_px: int = Field(
        80,
        ge=1,
        description="frames whose short side is below 2x this (pixels) are upscaled before detection so the "
        "face can reach the detector's window; points are mapped back",
    )
    detect_max_side: int = Field(
        320,
        ge=0,
        description="look for faces first on a copy downscaled so its long side is this many pixels (HOG cost "
        "falls with the area), then at full resolution when none is found there; landmarks are always "
        "predicted at full resolution. 0 = always detect at full resolution",
    )
    track: bool = Field(True, description="detect once, then follow the face from the previous landmarks")
    redetect_every: int = Field(0, ge=0, description="also re-detect every N frames; 0 = only when tracking fails")
    max_drift: float = Field(
        0.25,
        gt=0.0,
        description="re-detect when the tracked box moves or scales by more than this fraction of its size "
        "between frames",
    )
    min_track_similarity: float = Field(
        0.5,
        ge=-1.0,
        le=1.0,
        description="re-detect when the landmark-aligned face patch correlates less than this (normalised "
        "cross-correlation) with the previous frame's",
    )
    whole_frame_fallback: bool = Field(
        True,
        description="on frames smaller than 2x min_face_px where detection finds nothing, take the whole frame as "
        "the face box (tight face crops such as CK+48); turn off when small frames may hold no face",
    )
    tight_crops: bool = Field(
        False,
        description="frames smaller than 2x min_face_px are face crops (FER2013, CK+48): skip the detector's search "
        "and take the whole frame as the face box, as whole_frame_fallback does (~5x less landmark time on 48 px "
        "faces; the points differ from the detector's box by ~0.03 eye distances, median on FER2013, so off: "
        "configs whose figures were measured with the detector keep them)",
    )
    small_frame_search: Literal["crop_any", "crop_first", "full"] = Field(
        "crop_any",
        description="how the detector searches frames smaller than 2x min_face_px (upscaled to 2x min_face_px): "
        "first on a copy whose short side is 1.25x min_face_px (the scale at which a tight face crop's face fits the "
        "detector's window; ~2x cheaper than the whole upscaled frame). 'crop_any' keeps what that search finds, "
        "strong or weak, and searches the whole upscaled frame only when it finds nothing; 'crop_first' searches the "
        "whole frame unless it finds a normal-strength face; 'full' searches only the whole upscaled frame (as before "
        "this setting existed). On 1,500 FER2013 train images crop_first found 27 faces more than full and none "
        "fewer, with ~20 % less landmark time (~45 % on CK+48); crop_any skips the whole-frame search for about "
        "half of the frames crop_first still searches (FER2013 PublicTest with the ready model: 67.9 % either way, "
        "35 of 3,589 predictions changed, 12 now right and 12 now wrong; CK+48's points are the same)",
    )
    multi_face: Literal["largest", "centre"] = Field(
        "largest", description="face kept when several are detected: largest box, or closest to frame centre"
    )
    fan_weights: str | None = Field(
        None, description="local FAN checkpoint (2DFAN4 .pth.tar state dict or TorchScript file); never downloaded"
    )
    fan_flip: bool = Field(
        False, description="fan: average with the mirrored crop's heatmaps (face-alignment's default; 2x cost)"
    )
    predictor_path: str | None = Field(
        None, description="dlib 68-point shape predictor; default: face_recognition_models' copy"
    )
    predictor_impl: Literal["trees", "dlib"] = Field(
        "trees",
        description="how dlib's 68-point model is evaluated: 'trees' (the model file's trees as flat arrays in a "
        "compiled kernel, ~2x faster) or 'dlib' (dlib's own predictor); the same model and the same points",
    )
    subpixel: bool = Field(
        False,
        description="predictor_impl 'trees': keep its points unrounded instead of rounding them to whole pixels "
        "as dlib does. Tracks held-out faces with less drift, but 10-fold CV of CK+48 was 1.5 points lower on "
        "average over 3 seeds (BENCHMARKS.md), so off",
    )


@dataclass
class FrameLandmarks:
    """Landmarks of one frame.

    ``points`` (68, 2) float32 (x, y) source pixels, all NaN when no face; ``box`` (left, top, right, bottom)
    pixels or None: the detector's box on detected frames, the box derived from this frame's landmarks on
    tracked ones; ``detected`` True when this frame ran the detector (also when it found nothing), False when
    tracked from the previous frame; ``n_faces`` faces the detector saw (0 on tracked frames); ``note`` why a
    frame failed or how it was found, '' when unremarkable.
    """

    points: np.ndarray
    success: bool
    confidence: float
    box: Box | None
    detected: bool
    n_faces: int
    note: str = ""

    @classmethod
    def failed(cls, note: str, detected: bool = True, n_faces: int = 0) -> FrameLandmarks:
        return cls(np.full((N_POINTS, 2), np.nan, np.float32), False, 0.0, None, detected, n_faces, note)


class Landmarker(Protocol):
    """A landmark backend. Not thread-safe: build one per worker process."""

    name: str

    def track_sequence(
        self, frames: Iterable[np.ndarray], provided: Sequence[str] | None = None
    ) -> Iterator[FrameLandmarks]:
        """One result per input frame (uint8 [H, W] grey or [H, W, 3] RGB), in order. ``provided``: per-frame
        landmark file paths, used only by backends that read landmarks instead of finding them."""
        ...


@dataclass(frozen=True)
class Detection:
    """A detected face: ``box`` (left, top, right, bottom) pixels and ``confidence`` in [0, 1]."""

    box: Box
    confidence: float


class FaceDetector(Protocol):
    def detect(self, grey: np.ndarray, threshold: float = 0.0) -> list[Detection]:
        """Faces in a uint8 [H, W] grey image whose detector score reaches ``threshold`` (0 = the detector's
        own default; negative values admit weaker candidates, where the detector supports it)."""
        ...


class PointPredictor(Protocol):
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Convert a uint8 grey or RGB frame to what :meth:`predict` reads (once per frame)."""
        ...

    def predict(self, prepared: np.ndarray, box: Box) -> np.ndarray:
        """68 (x, y) points (float32, pixels) of the face in ``box``."""
        ...


# --------------------------------------------------------------------------------------------- geometry helpers


def points_box(points: np.ndarray) -> Box:
    """Bounding box (left, top, right, bottom) of (N, 2) points."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def box_centre_size(box: Box) -> tuple[float, float, float, float]:
    left, top, right, bottom = box
    return (left + right) / 2, (top + bottom) / 2, right - left, bottom - top


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def unscale_points(points: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Pixel coordinates in an image resized by ``factor`` (cv2.resize, pixel centres at integers) -> original;
    ``factor`` one number, or (fx, fy) per axis."""
    return ((np.asarray(points, np.float64) + 0.5) / factor - 0.5).astype(np.float32)


def similarity_residual(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance between ``points`` and ``reference`` after the best similarity transform (rotation, scale,
    translation) of ``points`` onto it, in units of the reference's outer-eye distance (inf when it cannot be
    fitted)."""
    try:
        fitted = transform_points(points, similarity_transform(points, reference))
    except StageError:
        return float("inf")
    return float(np.linalg.norm(fitted - reference, axis=1).mean() / max(eye_distance(reference), 1e-6))


# --------------------------------------------------------------------------------------------- validation

LANDMARK_NOTE = "landmarks: "
"""Prefix of the notes of frames whose landmarks exist but are unusable (or whose landmark file is missing or
malformed); sequences that fail report these notes in their reason."""
MIN_LANDMARK_SPREAD = 4.0
"""Pixels: landmarks whose bounding box is smaller than this on both sides are one point, not a face."""
FRAME_MARGIN = 0.5
"""Landmarks may lie outside the frame (a face cut by its edge) by at most this fraction of the frame's longer side."""


def landmark_problem(points: np.ndarray, frame_shape: tuple[int, ...]) -> str:
    """Why ``points`` (68, 2) cannot be a face in a frame of ``frame_shape`` ([H, W, ...]), '' when they can.
    The reason starts with :data:`LANDMARK_NOTE`, e.g. ``"landmarks: all 68 points within 0.0 px"``."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (N_POINTS, 2):
        return f"{LANDMARK_NOTE}expected {N_POINTS} (x, y) points, got shape {pts.shape}"
    if not np.isfinite(pts).all():
        return f"{LANDMARK_NOTE}non-finite values"
    spread = float(np.ptp(pts, axis=0).max())
    if spread < MIN_LANDMARK_SPREAD:
        return f"{LANDMARK_NOTE}all {N_POINTS} points within {spread:.1f} px"
    h, w = frame_shape[:2]
    margin = FRAME_MARGIN * max(h, w)
    outside = (
        (pts[:, 0] < -margin) | (pts[:, 0] > w - 1 + margin) | (pts[:, 1] < -margin) | (pts[:, 1] > h - 1 + margin)
    )
    if outside.any():
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return (
            f"{LANDMARK_NOTE}{int(outside.sum())} of {N_POINTS} points far outside the {w}x{h} frame "
            f"(x {lo[0]:.4g}..{hi[0]:.4g}, y {lo[1]:.4g}..{hi[1]:.4g})"
        )
    cx, cy = pts.mean(axis=0)
    if not (0 <= cx <= w - 1 and 0 <= cy <= h - 1):
        return f"{LANDMARK_NOTE}centre ({cx:.1f}, {cy:.1f}) outside the {w}x{h} frame"
    return ""


def checked(result: FrameLandmarks, frame_shape: tuple[int, ...], source: str = "") -> FrameLandmarks:
    """``result`` when it failed already or its points pass :func:`landmark_problem`; otherwise a failed result
    whose note says what is wrong (followed by `` (source)`` when given, e.g. the landmark file's name)."""
    if not result.success:
        return result
    problem = landmark_problem(result.points, frame_shape)
    if not problem:
        return result
    note = f"{problem} ({source})" if source else problem
    return FrameLandmarks.failed(note, detected=result.detected, n_faces=result.n_faces)
