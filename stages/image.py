"""Image layout shared by every stage: grey [H, W] <-> RGB [H, W, 3] uint8, and EXIF orientation (read, applied)."""

from __future__ import annotations

import struct
from typing import Literal

import cv2
import numpy as np

from stages.errors import StageError

Color = Literal["grey", "rgb"]


def _checked(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise StageError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3):
        return img
    raise StageError(f"expected a grey [H, W] or RGB [H, W, 3] image, got shape {img.shape}")


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] from grey [H, W], [H, W, 1] or RGB [H, W, 3] (ITU-R 601 luma, as OpenCV)."""
    img = _checked(image)
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB from grey (three identical channels) or RGB (unchanged)."""
    img = _checked(image)
    return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)


def to_color(image: np.ndarray, color: Color) -> np.ndarray:
    """The image in the requested layout: ``grey`` -> [H, W], ``rgb`` -> [H, W, 3]."""
    return to_grey(image) if color == "grey" else to_rgb(image)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` ([H, W] or [H, W, C]) turned upright as an image viewer shows it, for an EXIF ``orientation``
    (tag 0x0112: 1 upright, 2 mirrored, 3 rotated 180 degrees, 4 flipped, 5 transposed, 6 stored rotated 90
    degrees anticlockwise so shown turned 90 degrees clockwise, 7 transversed, 8 shown turned 90 degrees
    anticlockwise). Values outside 1..8 count as 1. Returns a C-contiguous array (``image`` itself for 1)."""
    if orientation not in _ORIENTATIONS:
        return image
    transpose, flip_rows, flip_cols = _ORIENTATIONS[orientation]
    out = image.swapaxes(0, 1) if transpose else image
    out = out[::-1] if flip_rows else out
    out = out[:, ::-1] if flip_cols else out
    return out if out is image else np.ascontiguousarray(out)


_ORIENTATIONS: dict[int, tuple[bool, bool, bool]] = {
    # orientation: (transpose, then flip rows (upside down), then flip columns (mirror)); as PIL's exif_transpose
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}


EXIF_ORIENTATION_TAG = 0x0112


def exif_orientation(tiff: bytes) -> int:
    """The orientation (1..8) in an EXIF block (a TIFF header and its first IFD, as held by a PNG ``eXIf`` chunk or
    after the ``Exif\\0\\0`` of a JPEG APP1 segment, which is skipped when present); 1 when the block has no
    orientation or cannot be read. Never raises."""
    data = tiff[6:] if tiff.startswith(b"Exif\0\0") else tiff
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return 1
    try:
        magic, ifd = struct.unpack(order + "HI", data[2:8])
        if magic != 42:
            return 1
        (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
        for k in range(count):
            entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == EXIF_ORIENTATION_TAG and kind == 3:  # SHORT
                (value,) = struct.unpack(order + "H", entry[8:10])
                return value if value in _ORIENTATIONS else 1
    except struct.error:  # a block cut short
        return 1
    return 1
