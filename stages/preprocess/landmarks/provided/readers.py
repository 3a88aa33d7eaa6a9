"""Readers of per-frame 68-point landmark files, chosen by file suffix.

- CK+ ``Landmarks/*_landmarks.txt`` (and any other suffix): 68 rows of ``x y`` floats, often in scientific
  notation (``   2.3100000e+02   2.0400000e+02``); coordinates are taken as written.
- 300-W ``.pts``: ``version: 1`` / ``n_points: 68`` / ``{`` / 68 ``x y`` rows / ``}``; 1-based (Matlab) pixel
  coordinates, so 1 is subtracted.
- ``.npy``: a [68, 2] array of (x, y), 0-based.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from stages.face_geometry import N_POINTS, read_pts


class MalformedLandmarks(ValueError):
    """A landmark file exists but does not hold 68 (x, y) numbers."""


def read_xy_text(path: Path) -> np.ndarray:
    """Whitespace-separated ``x y`` rows (CK+ format)."""
    return np.loadtxt(path, dtype=np.float64, ndmin=2)


def read_npy(path: Path) -> np.ndarray:
    return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)


READERS: dict[str, Callable[[Path], np.ndarray]] = {".pts": read_pts, ".npy": read_npy}
"""Reader per suffix; any other suffix is read as CK+-style ``x y`` text."""


def read_landmarks(path: str | Path) -> np.ndarray:
    """(68, 2) float32 (x, y) from a landmark file, as written (NaN and huge values included: whether they can be a
    face is :func:`~stages.preprocess.landmarks.base.landmark_problem`'s to say). Raises FileNotFoundError when it
    is absent and :class:`MalformedLandmarks` when it holds anything but 68 (x, y) numbers."""
    file = Path(path)
    reader = READERS.get(file.suffix.lower(), read_xy_text)
    try:
        points = reader(file)
    except (FileNotFoundError, MalformedLandmarks):
        raise
    except (ValueError, OSError) as err:
        raise MalformedLandmarks(f"{type(err).__name__}: {err}") from err
    if points.shape != (N_POINTS, 2):
        raise MalformedLandmarks(f"expected {N_POINTS} (x, y) points, found shape {points.shape}")
    with np.errstate(over="ignore"):  # 1e300 becomes inf: still reported as non-finite
        return points.astype(np.float32)
