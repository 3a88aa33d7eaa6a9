"""dlib backend: HOG (or MMOD) detection + the 68-point shape predictor, with the shared tracking logic."""

from __future__ import annotations

from stages.landmarks.base import LandmarkConfig
from stages.landmarks.dlib.models import DETECTORS, DlibShapePredictor, HogDetector, MmodDetector
from stages.landmarks.tracker import TrackingLandmarker


def build_detector(cfg: LandmarkConfig) -> HogDetector | MmodDetector:
    """The face detector named by ``cfg.detector`` (also used by the fan backend)."""
    return DETECTORS[cfg.detector](upsample=cfg.upsample)


def build(cfg: LandmarkConfig) -> TrackingLandmarker:
    """A dlib landmarker; build once per worker (dlib models are not thread-safe or picklable)."""
    return TrackingLandmarker(
        "dlib", cfg, build_detector(cfg), DlibShapePredictor(cfg.predictor_path, cfg.predictor_impl, cfg.subpixel)
    )


__all__ = ["build", "build_detector"]
