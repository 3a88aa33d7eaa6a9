"""One image file to pixels: its size checked against a pixel limit from the header, then decoded upright.

Order of work, so that no file costs more than its header admits: the header gives the size (PNG's IHDR, JPEG's
SOF segment, PIL's lazy ``Image.open`` for other formats; nothing is decoded) and an image above ``max_pixels``
is refused with a :class:`~stages.errors.StageError` before any pixel memory is taken. A 1.5 MB PNG can declare
40000x40000 pixels and inflate to 1.6 GB; it is refused in microseconds.

Orientation: the pixels come back as an image viewer shows them. PNGs (the fast path of
:mod:`stages.preprocess.png`, or OpenCV told to ignore orientation) get their ``eXIf`` orientation applied here,
so the result does not depend on whether the installed OpenCV reads PNG EXIF; other formats rely on OpenCV,
which applies JPEG, WebP and TIFF orientation itself (``IMREAD_IGNORE_ORIENTATION`` is off).
"""

from __future__ import annotations

import struct
import warnings
from typing import BinaryIO

import cv2
import numpy as np

from stages.errors import StageError
from stages.image import Color, apply_orientation

DEFAULT_MAX_PIXELS = 50_000_000
"""Default pixel limit of one image or video frame (50 megapixels: an 8K frame is 33)."""

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame: baseline .. lossless
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length field
_MAX_JPEG_SEGMENTS = 4096


def jpeg_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first SOF segment, walking the segment headers from the start of ``fh``
    (seeks over segment bodies; reads a few bytes each); None when no SOF precedes the image data."""
    fh.seek(2)  # after SOI
    for _ in range(_MAX_JPEG_SEGMENTS):
        if fh.read(1) != b"\xff":
            return None  # not at a marker: damaged
        code = fh.read(1)
        for _fill in range(64):  # fill bytes before the marker code
            if code != b"\xff":
                break
            code = fh.read(1)
        if not code or code[0] == 0xDA:  # end of file, or the image data without a frame header before it
            return None
        if code[0] in _STANDALONE_MARKERS:
            continue
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            return None
        if code[0] in _SOF_MARKERS:
            body = fh.read(5)
            if len(body) < 5:
                return None
            height, width = struct.unpack(">HH", body[1:5])
            return int(width), int(height)
        fh.seek(struct.unpack(">H", length_bytes)[0] - 2, 1)
    return None


def _pil_size(path: str, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from PIL's lazy open (reads the header only), None when PIL does not know the file."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:
        limit = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
        if limit and max_pixels < limit:
            raise StageError(
                f"{path}: image has more than {limit} pixels, above the limit of {max_pixels} "
                "(preprocess.frames.max_pixels); refused before decoding"
            ) from None
        return None
    except Exception:  # noqa: BLE001 - unknown or damaged: OpenCV decides and reports it
        return None


def check_pixels(path: str, size: tuple[int, int] | None, max_pixels: int, what: str = "image") -> None:
    """Raise :class:`StageError` naming ``path`` when ``size`` (width, height) has more than ``max_pixels``
    pixels; nothing for an unknown size (None)."""
    if size is None:
        return
    width, height = size
    if width * height > max_pixels:
        raise StageError(
            f"{path}: {what} is {width}x{height} pixels ({width * height / 1e6:.1f} MP), above the limit of "
            f"{max_pixels / 1e6:g} MP (preprocess.frames.max_pixels); refused before decoding"
        )


def _header_and_raw(path: str, max_pixels: int) -> tuple[tuple[int, int] | None, bytes | None]:
    """(size from the header or None, the whole file when it is a PNG small enough for the fast path)."""
    from stages.preprocess.png import SIGNATURE, png_size

    with open(path, "rb") as fh:
        head = fh.read(32)
        if head.startswith(SIGNATURE):
            size = png_size(head)
            check_pixels(path, size, max_pixels)
            fh.seek(0, 2)
            if fh.tell() > 4 * max_pixels + (1 << 20):  # more bytes than any allowed PNG needs: OpenCV streams it
                return size, None
            fh.seek(0)
            return size, fh.read()
        if head.startswith(b"\xff\xd8"):
            return jpeg_size(fh), None
    return _pil_size(path, max_pixels), None


def read_image(path: str, color: Color, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """The image in ``path`` upright (module doc): uint8 [H, W] for ``grey``, RGB [H, W, 3] for ``rgb``; None when
    the file cannot be opened or is not an image. Raises :class:`StageError` naming the file when it has more
    than ``max_pixels`` pixels (from its header, before decoding) or OpenCV fails on it."""
    try:
        size, raw = _header_and_raw(path, max_pixels)
    except OSError:
        return None
    check_pixels(path, size, max_pixels)
    flag = cv2.IMREAD_GRAYSCALE if color == "grey" else cv2.IMREAD_COLOR
    orientation = 1
    is_png = raw is not None
    if is_png:
        from stages.preprocess.png import decode_png, png_orientation  # numba: only in processes that decode

        orientation = png_orientation(raw)
        image = decode_png(raw, color)
        if image is not None:
            return apply_orientation(image, orientation)
        flag |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imread(path, flag)
    except cv2.error as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise StageError(f"{path}: OpenCV cannot decode this image: {first}") from None
    if image is None:
        return None
    if color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return apply_orientation(image, orientation)
