"""Canonical frontal 68-point face shape (iBUG order), its mirror permutation and landmark index groups.

Coordinates are (x, y) with x to the right and y DOWN (image convention), in units of the outer-eye-corner
distance: point 36 (outer corner of the right eye, image left) sits at (-0.5, 0) and point 45 at (0.5, 0).

How the numbers were derived (once, with a throw-away script; nothing here reads that data at run time):
generalised Procrustes analysis (similarity alignment, 6 iterations to convergence) of the 200 hand-annotated
300-W faces in ``../shared/faces/*.pts`` (1-based pixel coordinates, 1 subtracted), then the mean shape was
rotated/scaled/shifted so the outer eye corners sit at (-0.5, 0) and (0.5, 0), averaged with its mirror image
(x -> -x with :data:`FLIP_PERMUTATION`), normalised again and rounded to 6 decimals. It is exactly
mirror-symmetric.
"""

from __future__ import annotations

import numpy as np

N_POINTS = 68

# (x, y) per point, outer-eye-corner distance = 1, origin midway between the outer eye corners, y down.
# Groups: jaw 0-16, brows 17-26, nose 27-35, right eye 36-41, left eye 42-47, mouth 48-67.
_TEMPLATE_XY = (
    (-0.815831, 0.036107), (-0.807441, 0.246486), (-0.782709, 0.453451), (-0.738082, 0.657535),  # 0-3 jaw
    (-0.655770, 0.848570), (-0.524932, 1.014820), (-0.366249, 1.152329), (-0.194211, 1.263073),  # 4-7
    (0.000000, 1.296348), (0.194211, 1.263073), (0.366249, 1.152329), (0.524932, 1.014820),  # 8-11
    (0.655770, 0.848570), (0.738082, 0.657535), (0.782709, 0.453451), (0.807441, 0.246486),  # 12-15
    (0.815831, 0.036107), (-0.670510, -0.145002), (-0.572541, -0.237743), (-0.433630, -0.273401),  # 16-19
    (-0.287790, -0.259571), (-0.145186, -0.218982), (0.145186, -0.218982), (0.287790, -0.259571),  # 20-23
    (0.433630, -0.273401), (0.572541, -0.237743), (0.670510, -0.145002), (0.000000, -0.032133),  # 24-27
    (0.000000, 0.105474), (0.000000, 0.240816), (0.000000, 0.381211), (-0.168488, 0.482296),  # 28-31
    (-0.086679, 0.509188), (0.000000, 0.533156), (0.086679, 0.509188), (0.168488, 0.482296),  # 32-35
    (-0.500000, 0.000000), (-0.411469, -0.052343), (-0.302071, -0.051418), (-0.211651, 0.017558),  # 36-39 eye
    (-0.309452, 0.035786), (-0.417713, 0.034337), (0.211651, 0.017558), (0.302071, -0.051418),  # 40-43
    (0.411469, -0.052343), (0.500000, 0.000000), (0.417713, 0.034337), (0.309452, 0.035786),  # 44-47
    (-0.323218, 0.733022), (-0.207364, 0.685858), (-0.081562, 0.659916), (0.000000, 0.679607),  # 48-51 mouth
    (0.081562, 0.659916), (0.207364, 0.685858), (0.323218, 0.733022), (0.210121, 0.852764),  # 52-55
    (0.088297, 0.904298), (0.000000, 0.913488), (-0.088297, 0.904298), (-0.210121, 0.852764),  # 56-59
    (-0.277201, 0.740329), (-0.082824, 0.727808), (0.000000, 0.736434), (0.082824, 0.727808),  # 60-63
    (0.277201, 0.740329), (0.084259, 0.801659), (0.000000, 0.811809), (-0.084259, 0.801659),  # 64-67
)

TEMPLATE: np.ndarray = np.array(_TEMPLATE_XY, dtype=np.float64)
"""[68, 2] float64 canonical shape (read-only); see the module docstring for units and origin."""
TEMPLATE.setflags(write=False)

# Index i -> index of its mirror partner under a horizontal flip of the image (an involution).
FLIP_PERMUTATION: np.ndarray = np.array(
    list(range(16, -1, -1))  # jaw 0..16 reversed
    + list(range(26, 16, -1))  # brows 17..26 reversed
    + [27, 28, 29, 30]  # nose bridge: on the midline
    + [35, 34, 33, 32, 31]  # lower nose reversed
    + [45, 44, 43, 42, 47, 46]  # right eye 36..41 -> left eye
    + [39, 38, 37, 36, 41, 40]  # left eye 42..47 -> right eye
    + [54, 53, 52, 51, 50, 49, 48]  # outer lip upper 48..54 reversed
    + [59, 58, 57, 56, 55]  # outer lip lower 55..59 reversed
    + [64, 63, 62, 61, 60]  # inner lip upper 60..64 reversed
    + [67, 66, 65],  # inner lip lower 65..67 reversed
    dtype=np.int64,
)
FLIP_PERMUTATION.setflags(write=False)

# Landmark groups (0-based iBUG-68 indices).
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
RIGHT_EYE = np.arange(36, 42)  # the subject's right eye = image left
LEFT_EYE = np.arange(42, 48)
MOUTH = np.arange(48, 68)
NOSE_TIP = 30
OUTER_EYE_CORNERS = (36, 45)

# Points that fit a similarity transform, keyed by name (AlignConfig.anchors):
# - eyes_nose: the four eye corners and the nose (stable under expression; no eyelids, brows, mouth, jaw)
# - inner: every point that is neither mouth nor jaw (brows, nose, eyes)
ANCHOR_INDICES: dict[str, np.ndarray] = {
    "eyes_nose": np.array([36, 39, 42, 45, *range(27, 36)], dtype=np.int64),
    "inner": np.arange(17, 48, dtype=np.int64),
}


def mirror_points(points: np.ndarray, width: float | None = None) -> np.ndarray:
    """Mirror [..., 68, 2] (x, y) points horizontally and re-index them so index i is again iBUG point i.

    ``width`` is the image width in pixels: x -> (width - 1) - x (0-based pixel centres). Without it, x -> -x
    (template coordinates, mirrored about x = 0).
    """
    pts = np.asarray(points)
    out = pts[..., FLIP_PERMUTATION, :].copy()
    out[..., 0] = -out[..., 0] if width is None else (width - 1) - out[..., 0]
    return out
