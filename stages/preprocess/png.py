"""A fast path for decoding the PNG frames of image-sequence datasets (CK+, Oulu-CASIA, class folders).

Decoding a 640x490 grey CK+ frame with ``cv2.imread`` takes ~2.3 ms on the development machines, the largest
single cost of preprocessing (about a third of the worker time). Most of it is zlib's inflate (~1.2 ms) and
libpng's row handling. This module decodes the common case itself: ISA-L's inflate (``isal``, ~0.5 ms for the
same data) and the PNG row filters undone by a compiled loop (numba). Together that is about a third of
OpenCV's time.

Only this case is handled: 8-bit, non-interlaced, grey (colour type 0) or RGB (colour type 2), the only chunk
types read being IHDR, IDAT and IEND. :func:`decode_png` returns None for anything else (palette, alpha,
16-bit, interlaced, not a PNG, a damaged stream), and the caller falls back to OpenCV, which also produces the
error message for a file that really is broken. The pixels are exactly OpenCV's as stored (``tests/test_png.py``
checks all five filter types against ``cv2.imdecode``); the EXIF orientation of an ``eXIf`` chunk
(:func:`png_orientation`) is the caller's to apply, as :mod:`stages.preprocess.image_file` does.

Memory: :func:`decode_png` never inflates more than the header's ``height * (1 + width * channels)`` bytes, so a
stream that inflates beyond what its header declares costs nothing; a header that declares a huge image is the
caller's to refuse first (:func:`png_size`; ``image_file`` checks it against the pixel limit).

Contract: ``color='grey'`` -> uint8 [H, W]; ``color='rgb'`` -> uint8 [H, W, 3] in RGB order. Only grey-from-grey,
RGB-from-RGB and RGB-from-grey (the grey value in all three channels, as OpenCV does) are decoded here;
grey-from-RGB is left to OpenCV, whose weights this does not reproduce.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Literal

import numba as nb
import numpy as np
from isal import isal_zlib as _inflate  # ISA-L's inflate is ~2.5x zlib's

from stages.image import exif_orientation

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3}  # colour type -> samples per pixel (8-bit only)


@nb.njit(cache=True, nogil=True)
def unfilter_rows(data: np.ndarray, out: np.ndarray, bpp: int) -> bool:
    """Undo the PNG row filters of ``data`` (each row: a filter-type byte, then ``stride`` filtered bytes) into
    ``out`` [rows, stride] uint8; ``bpp`` bytes per pixel. False on an unknown filter type.

    The left neighbours are carried in scalars (``a``: left, ``c``: upper left), never re-read from the row just
    written: the read-after-write through memory made the Sub filter 4x slower."""
    rows, stride = out.shape
    pos = 0
    for y in range(rows):
        kind = data[pos]
        pos += 1
        if kind > 4:
            return False
        for k in range(bpp):  # each byte lane of a pixel is filtered on its own
            a = np.int32(0)  # reconstructed byte to the left
            c = np.int32(0)  # byte above that one
            if kind == 0 or (kind == 2 and y == 0):  # None, or Up on the first row
                for x in range(k, stride, bpp):
                    out[y, x] = data[pos + x]
            elif kind == 1 or (kind == 4 and y == 0):  # Sub (Paeth on the first row is Sub)
                for x in range(k, stride, bpp):
                    a = (np.int32(data[pos + x]) + a) & 0xFF
                    out[y, x] = a
            elif kind == 2:  # Up
                for x in range(k, stride, bpp):
                    out[y, x] = (np.int32(data[pos + x]) + np.int32(out[y - 1, x])) & 0xFF
            elif kind == 3:  # Average
                for x in range(k, stride, bpp):
                    b = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
                    a = (np.int32(data[pos + x]) + ((a + b) >> 1)) & 0xFF
                    out[y, x] = a
            else:  # Paeth
                for x in range(k, stride, bpp):
                    b = np.int32(out[y - 1, x])
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    if pa <= pb and pa <= pc:
                        pred = a
                    elif pb <= pc:
                        pred = b
                    else:
                        pred = c
                    a = (np.int32(data[pos + x]) + pred) & 0xFF
                    c = b
                    out[y, x] = a
        pos += stride
    return True


def png_chunks(raw: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk's data in ``raw`` (a whole PNG file, signature included), in file order,
    up to and including IEND. Stops early at a chunk that runs past the end; never raises."""
    pos, end = 8, len(raw)
    while pos + 8 <= end:
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        kind = raw[pos + 4 : pos + 8]
        if pos + 12 + length > end:
            return  # truncated chunk
        yield kind, pos + 8, pos + 8 + length
        if kind == b"IEND":
            return
        pos += 12 + length


def png_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's IHDR (the first 24 bytes suffice), or None when ``raw`` does not
    start like a PNG."""
    if not raw.startswith(SIGNATURE) or len(raw) < 24 or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return int(width), int(height)


def png_orientation(raw: bytes) -> int:
    """The EXIF orientation (1..8, see :func:`stages.image.apply_orientation`) of a PNG's ``eXIf`` chunk; 1
    when there is none or it cannot be read."""
    for kind, start, end in png_chunks(raw):
        if kind == b"eXIf":
            return exif_orientation(raw[start:end])
        if kind == b"IDAT":  # eXIf comes before the image data (PNG 1.5); later ones are not looked for
            break
    return 1


def decode_png(raw: bytes, color: Literal["grey", "rgb"]) -> np.ndarray | None:
    """The image in ``raw`` (a whole PNG file) as stored (EXIF orientation not applied), or None when it is not
    one this fast path handles (see module doc); never raises for bad data. Check :func:`png_size` against a
    pixel limit first: a small file can declare, and inflate to, gigabytes."""
    size = png_size(raw)
    if size is None or len(raw) < 33:
        return None
    width, height = size
    depth, ctype, _compression, _filter, interlace = struct.unpack(">BBBBB", raw[24:29])
    channels = _CHANNELS.get(ctype)
    if depth != 8 or interlace != 0 or channels is None or width == 0 or height == 0:
        return None
    if color == "grey" and channels != 1:
        return None
    parts = []
    for kind, start, end in png_chunks(raw):
        if kind == b"IDAT":
            parts.append(raw[start:end])
        elif kind == b"IEND":
            break
    else:
        return None  # no IEND: truncated file
    stride = width * channels
    expected = height * (stride + 1)
    try:
        inflater = _inflate.decompressobj()
        data = inflater.decompress(b"".join(parts), expected + 1)  # never more than the header declares
    except (_inflate.error, ValueError, MemoryError):  # a damaged stream
        return None
    if len(data) != expected or not inflater.eof:  # too short, too long, or an incomplete stream
        return None
    pixels = np.empty((height, stride), np.uint8)
    if not unfilter_rows(np.frombuffer(data, np.uint8), pixels, channels):
        return None
    if channels == 1:
        return pixels if color == "grey" else np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels.reshape(height, width, 3)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def warm_up() -> None:
    """Compile the row-filter loop into numba's on-disk cache by decoding a 1x1 grey PNG, so that processes
    started afterwards load it instead of compiling it (~0.3 s each)."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    tiny = SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0\0")) + _chunk(b"IEND", b"")
    if decode_png(tiny, "grey") is None:
        raise RuntimeError("the fast PNG path refused its own test image")
