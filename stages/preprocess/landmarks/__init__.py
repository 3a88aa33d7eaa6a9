"""68-point facial landmarks: interchangeable backends chosen by name, each in its own sub-package.

``build_landmarker(cfg)`` returns a :class:`Landmarker` whose ``track_sequence(frames, provided)`` yields one
:class:`FrameLandmarks` per frame. Backends (``LANDMARKERS``):

- ``dlib``: dlib HOG/MMOD detector + 68-point shape predictor, detect-then-track (see :mod:`.tracker`);
- ``fan``: face-alignment's FAN network from a local weights file, dlib boxes, the same tracking;
- ``provided``: the dataset's own per-frame landmark files (CK+ ``Landmarks/``, 300-W ``.pts``, ``.npy``).

Backends import their heavy dependencies (dlib, torch) only when built. Build one landmarker per worker process.
``warm_up_landmarker(cfg)`` fills a backend's on-disk caches once, before the workers that share them start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from stages.errors import StageError
from stages.face_geometry import N_POINTS, eye_distance, nme
from stages.preprocess.landmarks.base import Box, FrameLandmarks, LandmarkConfig, Landmarker
from stages.preprocess.landmarks.tracker import TrackingLandmarker

BACKEND_MODULES = {
    "dlib": "stages.preprocess.landmarks.dlib",
    "fan": "stages.preprocess.landmarks.fan",
    "provided": "stages.preprocess.landmarks.provided",
}


def _lazy(module: str) -> Callable[[LandmarkConfig], Landmarker]:
    def build(cfg: LandmarkConfig) -> Landmarker:
        return importlib.import_module(module).build(cfg)

    build.__doc__ = f"Build the landmarker of :mod:`{module}`."
    return build


LANDMARKERS: dict[str, Callable[[LandmarkConfig], Landmarker]] = {
    name: _lazy(module) for name, module in BACKEND_MODULES.items()
}


def build_landmarker(cfg: LandmarkConfig) -> Landmarker:
    """The landmarker named by ``cfg.backend``; ``StageError`` listing the known names when it is unknown,
    ``MissingWeightsError`` when its model file is absent."""
    try:
        builder = LANDMARKERS[cfg.backend]
    except KeyError:
        raise StageError(f"unknown landmark backend {cfg.backend!r}; known: {', '.join(sorted(LANDMARKERS))}") from None
    return builder(cfg)


def warm_up_landmarker(cfg: LandmarkConfig) -> None:
    """Fill the on-disk caches (converted models, compiled kernels) that building ``cfg.backend``'s landmarker
    fills in a fresh process, for backends that have such caches (a module-level ``warm_up``); nothing for the
    others or an unknown name. Raises what building would."""
    module = BACKEND_MODULES.get(cfg.backend)
    hook = getattr(importlib.import_module(module), "warm_up", None) if module else None
    if hook is not None:
        hook(cfg)


__all__ = [
    "LANDMARKERS",
    "N_POINTS",
    "Box",
    "FrameLandmarks",
    "LandmarkConfig",
    "Landmarker",
    "TrackingLandmarker",
    "build_landmarker",
    "warm_up_landmarker",
    "eye_distance",
    "nme",
]
