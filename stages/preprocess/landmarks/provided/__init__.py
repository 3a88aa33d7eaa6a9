"""provided backend: the dataset's own landmark files (CK+ ``Landmarks/``, 300-W ``.pts``, ``.npy``), one per
frame, instead of finding landmarks. Frames are only counted, never looked at.

A frame whose path is '' or whose file is missing gives ``success=False`` (``note`` says which); a malformed
file gives ``success=False`` with the reason in ``note``. Read points have confidence 1.0, ``detected=True``,
``n_faces=1`` and their bounding box as ``box``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from stages.preprocess.landmarks.base import FrameLandmarks, LandmarkConfig, points_box
from stages.preprocess.landmarks.provided.readers import MalformedLandmarks, read_landmarks


class ProvidedLandmarker:
    name = "provided"

    def track_sequence(
        self, frames: Iterable[np.ndarray], provided: Sequence[str] | None = None
    ) -> Iterator[FrameLandmarks]:
        """One result per frame from ``provided[i]`` (the i-th frame's landmark file)."""
        paths = list(provided or ())
        for i, _frame in enumerate(frames):
            yield self.read(paths[i] if i < len(paths) else "")

    @staticmethod
    def read(path: str) -> FrameLandmarks:
        """The landmarks in one file, or a failed result saying why."""
        if not path:
            return FrameLandmarks.failed("no landmark file for this frame", n_faces=0)
        try:
            points = read_landmarks(path)
        except FileNotFoundError:
            return FrameLandmarks.failed(f"landmark file missing: {path}")
        except MalformedLandmarks as err:
            return FrameLandmarks.failed(f"malformed landmark file {path}: {err}")
        return FrameLandmarks(points, True, 1.0, points_box(points), True, 1)


def build(cfg: LandmarkConfig) -> ProvidedLandmarker:
    del cfg
    return ProvidedLandmarker()


__all__ = ["ProvidedLandmarker", "build"]
