"""The face region of an aligned crop, from its 68 landmarks: everything else (background, hair, ears, the
crop's border) is replaced by the face's own mean grey, so that the appearance network cannot learn the
studio behind the faces.

Why: in CK+ the background and the framing differ between recording sessions, and some classes come from few
sessions (CK+48's contempt: 9 subjects, all of the later sessions, 6 of them with no other class). A network
trained on the whole crop learns the session's look with the class, and a face from another camera in front
of a white wall was called contempt whatever it did (BENCHMARKS.md, "The face mask").

The region is the convex hull of the jaw line (points 0-16) and of the brows (17-26) lifted by
``forehead`` outer-eye-corner distances along the face's vertical axis (chin -> nose root), so the forehead's
wrinkles (AU 1, 2) stay in. Its edge is feathered by a Gaussian of ``feather`` pixels so that no hard
polygon edge is learnt; the feathering runs inwards from the hull, so no pixel outside it keeps any weight.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.errors import StageError
from stages.face_geometry import BROWS, CHIN, JAW, N_POINTS, NOSE_ROOT, eye_distance


def face_region(points: np.ndarray, size: int, forehead: float = 0.5, feather: float = 1.5) -> np.ndarray:
    """[size, size] float32 weights in [0, 1]: 1 inside the face, 0 outside, feathered at the edge.

    ``points``: [68, 2] (x, y) in the pixels of the [size, size] image (0-based pixel centres), finite.
    ``forehead``: brow lift in outer-eye-corner distances; ``feather``: Gaussian sigma in pixels (0: hard).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
        raise StageError(f"a face region needs [{N_POINTS}, 2] finite landmarks; got {list(pts.shape)}")
    up = pts[NOSE_ROOT] - pts[CHIN]
    norm = float(np.linalg.norm(up))
    if norm < 1e-6:
        raise StageError("a face region needs distinct chin and nose-root landmarks")
    lift = forehead * eye_distance(pts) * up / norm
    hull = cv2.convexHull(np.concatenate([pts[JAW], pts[BROWS] + lift]).astype(np.float32))
    scale = 4  # rasterise at 4x with sub-pixel vertices, then average down: an anti-aliased edge
    big = np.zeros((size * scale, size * scale), dtype=np.uint8)
    cv2.fillConvexPoly(big, np.round((hull + 0.5) * scale - 0.5).astype(np.int32), 255, lineType=cv2.LINE_AA)
    region = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if feather > 0:  # feathered inwards: 2 * blur - 1 is 0 on the hull's edge, so no background gets weight
        blurred = cv2.GaussianBlur(region, (0, 0), feather, borderType=cv2.BORDER_CONSTANT)
        region = 2.0 * blurred - 1.0
    return np.clip(region, 0.0, 1.0).astype(np.float32)


def mask_face(frame: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``frame`` [S, S] or [S, S, 3] float32 with everything outside ``region`` [S, S] (weights in [0, 1])
    blended into the region's weighted mean intensity (per colour channel). Same shape and dtype."""
    x = np.asarray(frame, dtype=np.float32)
    w = region[..., None] if x.ndim == 3 else region
    total = float(region.sum())
    if total <= 0:
        raise StageError("the face region is empty (landmarks outside the crop?)")
    mean = (x * w).sum(axis=(0, 1)) / total
    return (w * x + (1.0 - w) * mean).astype(np.float32)
