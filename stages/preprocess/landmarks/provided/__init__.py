"""provided backend: the dataset's own landmark files (CK+ ``Landmarks/``, 300-W ``.pts``, ``.npy``), one per
frame, instead of finding landmarks. Frames are not looked at, only their size (to check the points against).

A frame whose path is '' or whose file is missing gives ``success=False`` (``note`` says which); a malformed
file, or points that cannot be a face in that frame (:func:`~stages.preprocess.landmarks.base.landmark_problem`:
non-finite, all on one spot, far off the frame), give ``success=False`` with the reason in ``note``; every such
note starts with ``"landmarks: "``. Read points have confidence 1.0, ``detected=True``, ``n_faces=1`` and their
bounding box as ``box``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from stages.preprocess.landmarks.base import LANDMARK_NOTE, FrameLandmarks, LandmarkConfig, checked, points_box
from stages.preprocess.landmarks.provided.readers import MalformedLandmarks, read_landmarks


class ProvidedLandmarker:
    name = "provided"

    def track_sequence(
        self, frames: Iterable[np.ndarray], provided: Sequence[str] | None = None
    ) -> Iterator[FrameLandmarks]:
        """One result per frame from ``provided[i]`` (the i-th frame's landmark file)."""
        paths = list(provided or ())
        for i, frame in enumerate(frames):
            yield self.read(paths[i] if i < len(paths) else "", np.shape(frame))

    @staticmethod
    def read(path: str, frame_shape: tuple[int, ...] | None = None) -> FrameLandmarks:
        """The landmarks in one file, or a failed result saying why; with ``frame_shape`` ([H, W, ...]) the points
        are also checked against that frame (:func:`~stages.preprocess.landmarks.base.checked`)."""
        if not path:
            return FrameLandmarks.failed(f"{LANDMARK_NOTE}no landmark file for this frame", n_faces=0)
        try:
            points = read_landmarks(path)
        except FileNotFoundError:
            return FrameLandmarks.failed(f"{LANDMARK_NOTE}landmark file missing: {path}")
        except MalformedLandmarks as err:
            return FrameLandmarks.failed(f"{LANDMARK_NOTE}malformed landmark file {path}: {err}")
        result = FrameLandmarks(points, True, 1.0, points_box(points), True, 1)
        return result if frame_shape is None else checked(result, frame_shape, Path(path).name)


def build(cfg: LandmarkConfig) -> ProvidedLandmarker:
    del cfg
    return ProvidedLandmarker()


__all__ = ["ProvidedLandmarker", "build"]
