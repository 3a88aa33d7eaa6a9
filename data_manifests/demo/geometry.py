"""Face measures and similarity matrices of the demo generator, on top of :mod:`stages.face_geometry` (the point
count, index groups, mirroring and point transforms live there).

Points are (x, y) image pixels, 0-based, y down, in iBUG 68-point order (jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47 with the image-left eye 36-41, mouth 48-67). Arrays are float64 of shape (68, 2) unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages import face_geometry as fg


@dataclass(frozen=True)
class FaceMeasures:
    """A face's own sizes (pixels), used to scale expression displacements so that nothing folds."""

    iod: float  # outer eye corners 36-45
    eye_h: tuple[float, float]  # lid-to-lid height of the image-left and image-right eye
    eye_w: float
    upper_lip: float  # outer-to-inner upper lip thickness at the centre (51-62)
    lower_lip: float  # inner-to-outer lower lip thickness at the centre (66-57)
    mouth_w: float  # 48-54
    face_w: float  # jaw 0-16
    face_h: float  # mean brow height to chin (8)
    centre: tuple[float, float]  # face centre: jaw mid x, midway between brows and chin


def measure(pts: np.ndarray) -> FaceMeasures:
    """Sizes of an upright face from its 68 landmarks."""

    def d(a: int, b: int) -> float:
        return float(np.linalg.norm(pts[a] - pts[b]))

    eye_ha = (d(37, 41) + d(38, 40)) / 2
    eye_hb = (d(43, 47) + d(44, 46)) / 2
    brow_y = float(pts[fg.BROWS, 1].mean())
    return FaceMeasures(
        iod=d(36, 45),
        eye_h=(max(eye_ha, 1.0), max(eye_hb, 1.0)),
        eye_w=(d(36, 39) + d(42, 45)) / 2,
        upper_lip=max(d(51, 62), 1.0),
        lower_lip=max(d(57, 66), 1.0),
        mouth_w=d(48, 54),
        face_w=d(0, 16),
        face_h=float(pts[8, 1]) - brow_y,
        centre=(float((pts[0, 0] + pts[16, 0]) / 2), float((brow_y + pts[8, 1]) / 2)),
    )


def eye_centres(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the image-left (36-41) and image-right (42-47) eyes."""
    return pts[fg.RIGHT_EYE].mean(axis=0), pts[fg.LEFT_EYE].mean(axis=0)


def roll_degrees(pts: np.ndarray) -> float:
    """Angle of the eye line (degrees, positive when the image-right eye is lower)."""
    a, b = eye_centres(pts)
    return float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))


def similarity(angle_deg: float, scale: float, centre: tuple[float, float], shift: tuple[float, float]) -> np.ndarray:
    """2x3 matrix: rotate by ``angle_deg`` (counter-clockwise on screen for positive values, like cv2) and scale
    about ``centre``, then translate by ``shift``."""
    a = np.radians(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    cx, cy = centre
    m = np.array([[c, s, 0.0], [-s, c, 0.0]])
    m[:, 2] = [cx - c * cx - s * cy + shift[0], cy + s * cx - c * cy + shift[1]]
    return m


def signed_areas(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (rows of vertex indices) of ``pts``."""
    a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def polygon_area(poly: np.ndarray) -> float:
    """Unsigned area of a simple polygon given as (N, 2) vertices."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
