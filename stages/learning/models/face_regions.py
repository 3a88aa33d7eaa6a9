"""Face regions cut by landmarks (PCNN's local inputs): definitions, boxes, masks, and batched patch cropping.

Five regions of the iBUG-68 face, each a square box around some landmarks (``REGIONS``, in this order):
``eye_right`` (right brow + right eye, points 17-21, 36-41: the subject's right = image left), ``eye_left``
(22-26, 42-47), ``cheek_right`` (2, 31, 41, 48: jaw, nose wing, lower eyelid, mouth corner), ``cheek_left``
(14, 35, 46, 54) and ``mouth`` (48-67).

A box is the square centred on the bounding box of its points, side = max(width, height) * (1 + 2 * margin),
at least ``MIN_SIDE`` of the image side. Boxes are (x0, y0, x1, y1) in pixel EDGE coordinates: pixel column
``i`` covers [i, i + 1), so a landmark at pixel centre x (0-based) sits at edge coordinate x + 0.5.

How the boxes reach a network: the data path renders them as binary mask channels appended to the appearance
input (:func:`region_masks`); the network reads each mask's bounding box back (:func:`boxes_from_masks`) and
crops fixed-size patches (:func:`crop_patches`). Masks are pixels, so training augmentation (flip, rotation,
zoom, shift) moves them exactly with the face.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stages.errors import StageError
from stages.face_geometry import N_POINTS

REGIONS: dict[str, tuple[tuple[int, ...], float]] = {
    "eye_right": ((*range(17, 22), *range(36, 42)), 0.15),
    "eye_left": ((*range(22, 27), *range(42, 48)), 0.15),
    "cheek_right": ((2, 31, 41, 48), 0.0),
    "cheek_left": ((14, 35, 46, 54), 0.0),
    "mouth": (tuple(range(48, 68)), 0.15),
}
"""region name -> (landmark indices, margin as a fraction of the box side on each side)."""

REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
N_REGIONS = len(REGIONS)
MIN_SIDE = 0.1


def region_boxes(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Square boxes [R, 4] float32 (x0, y0, x1, y1), pixel-edge coordinates, of every region in
    :data:`REGION_NAMES` order, for ``landmarks`` [68, 2] (x, y) pixel centres in an image of ``size`` px.

    Boxes are not clipped (a region may reach past the border). :class:`StageError` on a wrong shape or a
    non-finite landmark used by a region.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (N_POINTS, 2):
        raise StageError(f"face regions need landmarks [{N_POINTS}, 2]; got {list(pts.shape)}")
    boxes = np.empty((N_REGIONS, 4), dtype=np.float64)
    for r, (idx, margin) in enumerate(REGIONS.values()):
        p = pts[list(idx)] + 0.5  # pixel centres -> edge coordinates
        if not np.isfinite(p).all():
            raise StageError("face regions: a landmark used by a region is not finite")
        lo, hi = p.min(axis=0), p.max(axis=0)
        side = max(float((hi - lo).max()) * (1.0 + 2.0 * margin), MIN_SIDE * size)
        centre = (lo + hi) / 2.0
        boxes[r] = [*(centre - side / 2.0), *(centre + side / 2.0)]
    return boxes.astype(np.float32)


def region_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Binary masks [R, size, size] float32: 1 where a pixel's centre lies inside the region's box."""
    boxes = region_boxes(landmarks, size).astype(np.float64)
    centres = np.arange(size, dtype=np.float64) + 0.5
    masks = np.zeros((N_REGIONS, size, size), dtype=np.float32)
    for r, (x0, y0, x1, y1) in enumerate(boxes):
        cols = (centres >= x0) & (centres < x1)
        rows = (centres >= y0) & (centres < y1)
        masks[r] = np.outer(rows, cols)
    return masks


def boxes_from_masks(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Bounding boxes [B, R, 4] (x0, y0, x1, y1, pixel edges) of ``masks`` [B, R, H, W] > ``threshold``.

    An empty mask (a region augmented out of the image) gives the whole image. No gradient flows through.
    """
    b, r, h, w = masks.shape
    on = masks.detach() > threshold
    rows, cols = on.any(dim=3), on.any(dim=2)  # [B, R, H], [B, R, W]

    def first_last(v: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        vi = v.to(torch.uint8)
        first = vi.argmax(dim=-1)
        last = n - 1 - vi.flip(-1).argmax(dim=-1)
        empty = ~v.any(dim=-1)
        return torch.where(empty, 0, first), torch.where(empty, n - 1, last)

    y0, y1 = first_last(rows, h)
    x0, x1 = first_last(cols, w)
    return torch.stack([x0, y0, x1 + 1, y1 + 1], dim=-1).to(masks.dtype)


def crop_patches(x: torch.Tensor, boxes: torch.Tensor, patch: int) -> torch.Tensor:
    """Resample every box of every sample to ``patch`` x ``patch`` pixels (bilinear, zeros outside).

    ``x`` [B, C, H, W], ``boxes`` [B, R, 4] pixel-edge coordinates -> [B, R, C, patch, patch].
    """
    b, c, h, w = x.shape
    r = boxes.shape[1]
    bx = boxes.reshape(b * r, 4).to(x.dtype)
    theta = torch.zeros(b * r, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = (bx[:, 2] - bx[:, 0]) / w
    theta[:, 0, 2] = (bx[:, 0] + bx[:, 2]) / w - 1.0
    theta[:, 1, 1] = (bx[:, 3] - bx[:, 1]) / h
    theta[:, 1, 2] = (bx[:, 1] + bx[:, 3]) / h - 1.0
    grid = F.affine_grid(theta, [b * r, c, patch, patch], align_corners=False)
    src = x.unsqueeze(1).expand(b, r, c, h, w).reshape(b * r, c, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, r, c, patch, patch)
