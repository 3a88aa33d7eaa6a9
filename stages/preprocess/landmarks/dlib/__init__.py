"""dlib backend: HOG (or MMOD) detection + the 68-point shape predictor, with the shared tracking logic."""

from __future__ import annotations

from stages.preprocess.landmarks.base import LandmarkConfig
from stages.preprocess.landmarks.dlib.models import (
    DETECTORS,
    PREDICTOR_FILE,
    DlibShapePredictor,
    HogDetector,
    MmodDetector,
    frontal_face_detector,
    model_path,
)
from stages.preprocess.landmarks.tracker import TrackingLandmarker


def build_detector(cfg: LandmarkConfig) -> HogDetector | MmodDetector:
    """The face detector named by ``cfg.detector`` (also used by the fan backend)."""
    return DETECTORS[cfg.detector](upsample=cfg.upsample)


def build(cfg: LandmarkConfig) -> TrackingLandmarker:
    """A dlib landmarker; build once per worker (dlib models are not thread-safe or picklable)."""
    return TrackingLandmarker(
        "dlib", cfg, build_detector(cfg), DlibShapePredictor(cfg.predictor_path, cfg.predictor_impl, cfg.subpixel)
    )


def warm_up_detector(cfg: LandmarkConfig) -> None:
    """Save the HOG detector where :func:`~stages.preprocess.landmarks.dlib.models.frontal_face_detector` reloads it."""
    if cfg.detector == "hog":
        frontal_face_detector()


def warm_up(cfg: LandmarkConfig) -> None:
    """Fill the on-disk caches that building and first using this landmarker fill in a fresh process: the saved
    HOG detector, the converted shape predictor and its compiled kernel.
    Raises what :func:`build` would (a missing model file)."""
    if cfg.predictor_impl == "trees":  # workers wait for the converted model, then call the kernel: kernel first
        from stages.preprocess.landmarks.dlib.converted import load_tree_model
        from stages.preprocess.landmarks.dlib.trees import warm_up_kernel

        warm_up_kernel()
        warm_up_detector(cfg)
        load_tree_model(model_path(PREDICTOR_FILE, cfg.predictor_path))
    else:
        warm_up_detector(cfg)


__all__ = ["build", "build_detector", "warm_up", "warm_up_detector"]
