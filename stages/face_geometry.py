"""68-point face geometry, the one place for it: point count, index groups, mirroring, the canonical frontal
template, the similarity fit, the 300-W ``.pts`` reader and the NME landmark error.

A bottom-layer module: it imports only numpy and :mod:`stages.errors` (a leaf), so every stage and the demo
generator (``data_manifests.demo``) can depend on it.

Conventions: 68 points in iBUG order (jaw 0-16, brows 17-26, nose 27-35, right eye 36-41 = image left, left eye
42-47, mouth 48-67); (x, y) with x to the right and y DOWN (image convention); pixel coordinates are 0-based,
pixel centres at integers.

The template (:data:`TEMPLATE`) is in units of the outer-eye-corner distance: point 36 (outer corner of the right
eye, image left) sits at (-0.5, 0) and point 45 at (0.5, 0).

How the template numbers were derived (once, with a throw-away script; nothing here reads that data at run time):
generalised Procrustes analysis (similarity alignment, 6 iterations to convergence) of the 200 hand-annotated
300-W faces in ``../shared/faces/*.pts`` (1-based pixel coordinates, 1 subtracted), then the mean shape was
rotated/scaled/shifted so the outer eye corners sit at (-0.5, 0) and (0.5, 0), averaged with its mirror image
(x -> -x with :data:`FLIP_PERMUTATION`), normalised again and rounded to 6 decimals. It is exactly
mirror-symmetric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.errors import StageError

N_POINTS = 68
"""Landmarks per face (iBUG 68-point scheme)."""

# (x, y) per point, outer-eye-corner distance = 1, origin midway between the outer eye corners, y down.
# Groups: jaw 0-16, brows 17-26, nose 27-35, right eye 36-41, left eye 42-47, mouth 48-67.
_TEMPLATE_XY = (
    (-0.815831, 0.036107),
    (-0.807441, 0.246486),
    (-0.782709, 0.453451),
    (-0.738082, 0.657535),  # 0-3 jaw
    (-0.655770, 0.848570),
    (-0.524932, 1.014820),
    (-0.366249, 1.152329),
    (-0.194211, 1.263073),  # 4-7
    (0.000000, 1.296348),
    (0.194211, 1.263073),
    (0.366249, 1.152329),
    (0.524932, 1.014820),  # 8-11
    (0.655770, 0.848570),
    (0.738082, 0.657535),
    (0.782709, 0.453451),
    (0.807441, 0.246486),  # 12-15
    (0.815831, 0.036107),
    (-0.670510, -0.145002),
    (-0.572541, -0.237743),
    (-0.433630, -0.273401),  # 16-19
    (-0.287790, -0.259571),
    (-0.145186, -0.218982),
    (0.145186, -0.218982),
    (0.287790, -0.259571),  # 20-23
    (0.433630, -0.273401),
    (0.572541, -0.237743),
    (0.670510, -0.145002),
    (0.000000, -0.032133),  # 24-27
    (0.000000, 0.105474),
    (0.000000, 0.240816),
    (0.000000, 0.381211),
    (-0.168488, 0.482296),  # 28-31
    (-0.086679, 0.509188),
    (0.000000, 0.533156),
    (0.086679, 0.509188),
    (0.168488, 0.482296),  # 32-35
    (-0.500000, 0.000000),
    (-0.411469, -0.052343),
    (-0.302071, -0.051418),
    (-0.211651, 0.017558),  # 36-39 eye
    (-0.309452, 0.035786),
    (-0.417713, 0.034337),
    (0.211651, 0.017558),
    (0.302071, -0.051418),  # 40-43
    (0.411469, -0.052343),
    (0.500000, 0.000000),
    (0.417713, 0.034337),
    (0.309452, 0.035786),  # 44-47
    (-0.323218, 0.733022),
    (-0.207364, 0.685858),
    (-0.081562, 0.659916),
    (0.000000, 0.679607),  # 48-51 mouth
    (0.081562, 0.659916),
    (0.207364, 0.685858),
    (0.323218, 0.733022),
    (0.210121, 0.852764),  # 52-55
    (0.088297, 0.904298),
    (0.000000, 0.913488),
    (-0.088297, 0.904298),
    (-0.210121, 0.852764),  # 56-59
    (-0.277201, 0.740329),
    (-0.082824, 0.727808),
    (0.000000, 0.736434),
    (0.082824, 0.727808),  # 60-63
    (0.277201, 0.740329),
    (0.084259, 0.801659),
    (0.000000, 0.811809),
    (-0.084259, 0.801659),  # 64-67
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
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)  # polygon order 60..67 bounds the mouth interior
INNER_UPPER = np.array([61, 62, 63])
INNER_LOWER = np.array([67, 66, 65])  # paired with INNER_UPPER column by column
NOSE_TIP = 30
NOSE_ROOT = 27  # top of the nose bridge, between the eyes
CHIN = 8  # the jaw line's lowest point (menton)
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


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a [2, 3] affine matrix to [..., 2] (x, y) points; NaN stays NaN. Returns float64."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; never a reflection) mapping ``src``
    onto ``dst``. ``src``, ``dst``: [N, 2] (x, y), N >= 2, finite. Returns a [2, 3] float64 matrix M with
    ``dst ~= src @ M[:, :2].T + M[:, 2]``. Raises StageError for bad shapes, non-finite points or coincident
    source points.

    In the plane Umeyama's (1991) solution has a closed form: with the points centred and read as complex numbers,
    the linear part is the z = a + ib minimising sum |z * src - dst|^2, z = sum(conj(src) * dst) / sum |src|^2. The
    same matrix as the SVD route to ~1e-13 (``tests/test_align.py``) in about half its time (23-32 against 43-54 us
    for 13-68 points; every aligned frame, trajectory step and tracked-shape check fits one).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise StageError(f"similarity_transform needs two [N, 2] arrays with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise StageError("similarity_transform got non-finite points")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    norm = float(np.einsum("ij,ij->", xs, xs))
    if norm / len(src) <= 1e-12:
        raise StageError("similarity_transform: source points coincide; no transform can be fitted")
    a = float(np.einsum("ij,ij->", xs, xd)) / norm
    b = float(xs[:, 0] @ xd[:, 1] - xs[:, 1] @ xd[:, 0]) / norm
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = ((a, -b), (b, a))
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def eye_distance(points: np.ndarray) -> float:
    """Outer-eye-corner distance (points 36, 45) of [68, 2] points, in their units; the NME normaliser."""
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(points[a] - points[b]))


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point-to-point error of [68, 2] ``pred`` divided by the outer-eye-corner distance of ``truth``
    (unitless; NaN when ``pred`` has NaNs)."""
    return float(np.linalg.norm(pred - truth, axis=1).mean() / eye_distance(truth))


def read_pts(path: str | Path) -> np.ndarray:
    """Read a 300-W ``.pts`` file (``version``/``n_points`` header, ``{``, 68 lines ``x y`` in 1-based pixel
    coordinates, ``}``); return [68, 2] float64 0-based pixel coordinates (file values minus 1).

    Raises OSError when the file cannot be read and ValueError (message without the path) when it is not a
    68-point ``.pts`` file; callers add the path to the error their layer raises.
    """
    text = Path(path).read_text()  # UnicodeDecodeError is a ValueError
    if "{" not in text or "}" not in text:
        raise ValueError("not a 300-W .pts file (no '{ ... }' block)")
    body = text.split("{", 1)[1].split("}", 1)[0].split()
    try:
        values = np.array([float(v) for v in body], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"non-numeric landmark value ({exc})") from exc
    if values.size != 2 * N_POINTS:
        raise ValueError(f"expected {N_POINTS} points, found {values.size / 2:g}")
    return values.reshape(N_POINTS, 2) - 1.0
