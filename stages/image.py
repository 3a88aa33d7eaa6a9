"""Colour-layout conversion shared by every stage: uint8 grey [H, W] (or [H, W, 1]) <-> RGB [H, W, 3]."""

from __future__ import annotations

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
