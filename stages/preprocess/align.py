"""Face alignment: a similarity transform from stable landmarks onto the canonical template, then a crop.

Conventions: images are uint8, grey [H, W] (or [H, W, 1]) or RGB [H, W, 3] (RGB channel order, as the decoder
returns them); points are (x, y) pixel coordinates, 0-based, pixel centres at integers, iBUG-68 order.

Every frame is aligned on its own (no temporal smoothing of the transform). The similarity is fitted by
least squares on the anchor points only (eye corners + nose by default), so a moving mouth, brow or jaw does
not move the crop; the expression stays visible as motion inside a fixed frame of reference.

Border handling: crop pixels that fall outside the source image are filled as ``AlignConfig.border`` says.
The default ``replicate`` repeats the edge pixels, which avoids a hard black edge (a strong, meaningless
feature for a CNN) when a face is close to the frame border; ``constant`` fills with black, which shows the
user plainly where the source ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np
from pydantic import ConfigDict, Field

from stages.errors import StageError
from stages.face_geometry import ANCHOR_INDICES, N_POINTS, TEMPLATE, similarity_transform, transform_points
from stages.image import to_color
from stages.later_settings import LaterSettings

BORDER_MODES: dict[str, int] = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


class AlignConfig(LaterSettings):
    """How faces are cut out: crop size and colour, which landmarks fit the transform, where the face sits."""

    model_config = ConfigDict(extra="forbid")
    AS_BEFORE: ClassVar[dict[str, object]] = {"antialias": False}  # off: not dumped (stages.later_settings)

    size: int = Field(112, ge=8, le=1024, description="Side of the square aligned crop, pixels.")
    color: Literal["grey", "rgb"] = Field(
        "grey", description="Colour of the crop: grey [S, S] or RGB [S, S, 3] uint8, whatever the source is."
    )
    anchors: Literal["eyes_nose", "inner"] = Field(
        "eyes_nose",
        description="Landmarks that fit the similarity: 'eyes_nose' = the 4 eye corners + nose (27-35), "
        "stable under expression; 'inner' = every non-mouth, non-jaw point (brows, nose, eyes: 17-47).",
    )
    face_scale: float = Field(
        0.45,
        gt=0.05,
        le=2.0,
        description="Outer-eye-corner distance (points 36-45) as a fraction of the crop side. With 0.45 and "
        "vertical_offset 0.25 the template face spans x 13-87% and y 13-84% of the crop: brows to chin and "
        "jaw to jaw visible, room for an opened jaw or a turned head (all 68 points of 86% of the 300-W test "
        "faces, many of them turned, fall inside).",
    )
    vertical_offset: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Height of the eye line (midpoint of the outer eye corners) from the top of the crop, "
        "as a fraction of the crop side. The face is horizontally centred.",
    )
    border: Literal["replicate", "constant"] = Field(
        "replicate",
        description="Fill for crop pixels outside the source image: 'replicate' edge pixels (default, no "
        "artificial edge) or 'constant' black.",
    )
    antialias: bool = Field(
        False,
        description="When the crop is smaller than the face in the source (a 640x490 CK+ frame, a photo), first "
        "shrink the part of the source the crop covers by area averaging to the crop's scale, then warp: without "
        "it, the bilinear warp skips source pixels and aliases (jagged edges, speckle) that crops of small faces "
        "(FER2013, CK+48), enlarged, never show. No effect where the crop enlarges the face.",
    )


@dataclass
class AlignedFace:
    """One aligned face: ``image`` [S, S] or [S, S, 3] uint8; ``points`` [68, 2] float32 crop pixels (x, y);
    ``matrix`` [2, 3] float64 from source to crop pixels: ``crop = matrix[:, :2] @ src + matrix[:, 2]``.
    """

    image: np.ndarray
    points: np.ndarray
    matrix: np.ndarray


def crop_template(cfg: AlignConfig) -> np.ndarray:
    """Where the template's 68 points sit in the crop: [68, 2] float64 crop pixels (x, y), 0-based centres.

    Mirror-symmetric about the crop's vertical centre line x = (S - 1) / 2, so flipping an aligned crop equals
    aligning the flipped image.
    """
    s = float(cfg.size)
    scale = cfg.face_scale * s
    origin = np.array([(s - 1.0) / 2.0, cfg.vertical_offset * (s - 1.0)])
    return TEMPLATE * scale + origin


def align_face(image: np.ndarray, points: np.ndarray, cfg: AlignConfig) -> AlignedFace:
    """Align one face. ``points`` [68, 2] source pixels; the anchor points must be finite (else StageError).

    The crop is ``cv2.warpAffine`` with bilinear interpolation (with ``cfg.antialias``, of the covered region first
    shrunk by area averaging when the crop is smaller than the face: :func:`shrunk_source`); ``points`` are carried
    into crop pixels with the same matrix (non-anchor NaN points stay NaN).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (N_POINTS, 2):
        raise StageError(f"align_face expects [{N_POINTS}, 2] landmarks, got {pts.shape}")
    idx = ANCHOR_INDICES[cfg.anchors]
    if not np.isfinite(pts[idx]).all():
        raise StageError("align_face: the anchor landmarks are missing (no face)")
    matrix = similarity_transform(pts[idx], crop_template(cfg)[idx])
    img = to_color(image, cfg.color)
    source, warp = (shrunk_source(img, matrix, cfg.size) if cfg.antialias else None) or (img, matrix)
    crop = cv2.warpAffine(
        np.ascontiguousarray(source),
        warp,
        (cfg.size, cfg.size),
        flags=cv2.INTER_LINEAR,
        borderMode=BORDER_MODES[cfg.border],
        borderValue=0,
    )
    return AlignedFace(image=crop, points=transform_points(pts, matrix).astype(np.float32), matrix=matrix)


def shrunk_source(image: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(the region of ``image`` that the ``size`` x ``size`` crop of ``matrix`` (source -> crop pixels) covers,
    shrunk by area averaging to the crop's scale; the matrix from that shrunk region to crop pixels), or None when
    the crop does not shrink the source (scale >= 1) or covers none of it. Warping the shrunk region gives the
    crop without aliasing; the crop's geometry (``matrix``) is unchanged."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if not 0.0 < scale < 1.0:
        return None
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64) - 0.5
    footprint = corners @ inverse[:, :2].T + inverse[:, 2]
    margin = 2.0 / scale  # two crop pixels, for the bilinear warp's neighbours at the edge
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v - margin))) for v in footprint.min(axis=0))
    x1, y1 = (int(np.ceil(v + margin)) + 1 for v in footprint.max(axis=0))
    x1, y1 = min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    out_w, out_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    region = cv2.resize(image[y0:y1, x0:x1], (out_w, out_h), interpolation=cv2.INTER_AREA)
    fx, fy = out_w / (x1 - x0), out_h / (y1 - y0)
    # shrunk pixel centre (u, v) <- source (x0 + (u + 0.5) / fx - 0.5, y0 + (v + 0.5) / fy - 0.5)
    to_source = np.array([[1.0 / fx, 0.0, x0 + 0.5 / fx - 0.5], [0.0, 1.0 / fy, y0 + 0.5 / fy - 0.5]])
    warp = matrix[:, :2] @ to_source[:, :2]
    return region, np.hstack([warp, (matrix[:, :2] @ to_source[:, 2] + matrix[:, 2])[:, None]])


def align_frames(
    images: Sequence[np.ndarray] | np.ndarray,
    points: np.ndarray,
    success: np.ndarray,
    cfg: AlignConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Align T frames independently. ``images``: T uint8 frames (grey or RGB); ``points`` [T, 68, 2] source
    pixels; ``success`` [T] bool. A bad image (wrong dtype or shape) raises StageError.

    Returns (crops [T, S, S] or [T, S, S, 3] uint8, crop points [T, 68, 2] float32). A frame without success
    or without finite (non-degenerate) anchor points gives an all-zero crop and NaN points; it never raises.
    """
    pts = np.asarray(points, dtype=np.float64)
    ok = np.asarray(success, dtype=bool).reshape(-1)
    n = len(images)
    if pts.shape != (n, N_POINTS, 2) or ok.shape != (n,):
        raise StageError(
            f"align_frames: {n} images but landmarks {pts.shape} and success {ok.shape} "
            f"(expected [{n}, {N_POINTS}, 2] and [{n}])"
        )
    shape = (n, cfg.size, cfg.size) + ((3,) if cfg.color == "rgb" else ())
    crops = np.zeros(shape, dtype=np.uint8)
    out_pts = np.full((n, N_POINTS, 2), np.nan, dtype=np.float32)
    idx = ANCHOR_INDICES[cfg.anchors]
    for t in range(n):
        if not ok[t] or not np.isfinite(pts[t, idx]).all():
            continue
        try:
            face = align_face(images[t], pts[t], cfg)
        except StageError:  # degenerate landmarks (e.g. all anchors on one pixel): treat as no face
            continue
        crops[t] = face.image
        out_pts[t] = face.points
    return crops, out_pts
