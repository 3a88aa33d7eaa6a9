"""The PNG fast path (:mod:`stages.preprocess.png`): exactly OpenCV's pixels where it decodes, None (OpenCV's turn)
elsewhere.

Contract checked: ``decode_png(raw, 'grey')`` -> uint8 [H, W]; ``decode_png(raw, 'rgb')`` -> uint8 [H, W, 3] in RGB
order (OpenCV's BGR converted); files it does not handle come back as None, never as an exception.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest

from stages.errors import StageError
from stages.preprocess.decode import SequenceSource, iter_frames
from stages.preprocess.png import decode_png

FILTERS = {0: "none", 1: "sub", 2: "up", 3: "average", 4: "paeth"}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode_png(image: np.ndarray, filters: list[int], idat_parts: int = 2, interlace: int = 0) -> bytes:
    """A PNG of ``image`` (uint8 [H, W] grey or [H, W, 3] RGB) with row ``y`` filtered by ``filters[y % len]``,
    its compressed data split over ``idat_parts`` IDAT chunks: a reference encoder independent of
    stages.preprocess.png."""
    h, w = image.shape[:2]
    bpp = 1 if image.ndim == 2 else 3
    rows = image.reshape(h, w * bpp).astype(np.int32)
    out = bytearray()
    for y in range(h):
        kind = filters[y % len(filters)]
        row, above = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int32), above[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(row)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = above
        elif kind == 3:
            pred = (left + above) // 2
        else:
            pred = np.array([_paeth(a, b, c) for a, b, c in zip(left, above, upper_left, strict=True)])
        out.append(kind)
        out.extend(((row - pred) % 256).astype(np.uint8).tobytes())
    data = zlib.compress(bytes(out), 6)
    step = -(-len(data) // idat_parts)
    ctype = 0 if bpp == 1 else 2
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, interlace))
    png += _chunk(b"tEXt", b"Comment\0made by the test")
    for i in range(0, len(data), step):
        png += _chunk(b"IDAT", data[i : i + step])
    return png + _chunk(b"IEND", b"")


def _opencv(raw: bytes, color: str) -> np.ndarray:
    flag = cv2.IMREAD_GRAYSCALE if color == "grey" else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), flag)
    return image if color == "grey" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    """A 37x53 RGB image with smooth gradients and noise (every filter type sees carries and wrap-around)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:37, 0:53]
    base = np.stack([x * 5, y * 7, (x + y) * 3], axis=2) + rng.integers(0, 60, (37, 53, 3))
    return (base % 256).astype(np.uint8)


@pytest.mark.parametrize("kind", sorted(FILTERS), ids=list(FILTERS.values()))
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_each_filter_type_decodes_exactly(kind: int, channels: int, textured: np.ndarray) -> None:
    image = textured[:, :, 0] if channels == 1 else textured
    raw = encode_png(image, [kind])
    color = "grey" if channels == 1 else "rgb"
    decoded = decode_png(raw, color)
    assert decoded is not None and decoded.dtype == np.uint8
    assert np.array_equal(decoded, image)
    assert np.array_equal(decoded, _opencv(raw, color))


def test_mixed_filters_and_opencv_written_files(textured: np.ndarray) -> None:
    grey = cv2.cvtColor(textured, cv2.COLOR_RGB2GRAY)
    raw = encode_png(grey, [4, 0, 3, 1, 2, 2, 4], idat_parts=5)
    assert np.array_equal(decode_png(raw, "grey"), grey)
    for level in (0, 1, 9):  # OpenCV's own writer at several compression levels
        ok, buf = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, level])
        assert ok and np.array_equal(decode_png(buf.tobytes(), "grey"), grey)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(textured, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, level])
        assert ok and np.array_equal(decode_png(buf.tobytes(), "rgb"), textured)


def test_grey_file_read_as_rgb_repeats_the_grey_value(textured: np.ndarray) -> None:
    grey = textured[:, :, 1]
    raw = encode_png(grey, [1, 4])
    decoded = decode_png(raw, "rgb")
    assert decoded.shape == (*grey.shape, 3) and np.array_equal(decoded, _opencv(raw, "rgb"))


def _damaged(raw: bytes) -> bytes:
    """``raw`` with 20 bytes in the middle of its compressed data overwritten."""
    middle = len(raw) // 2
    return raw[:middle] + b"\x55" * 20 + raw[middle + 20 :]


def _pil_png(image: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "case",
    ["rgb_as_grey", "palette", "grey_alpha", "rgba", "16_bit", "interlaced", "truncated", "corrupt", "jpeg", "empty"],
)
def test_other_files_are_left_to_opencv(case: str, textured: np.ndarray) -> None:
    """Anything outside the fast path returns None (never raises), so the caller falls back to OpenCV."""
    grey = textured[:, :, 0]
    raw = {
        "rgb_as_grey": lambda: encode_png(textured, [1]),
        "palette": lambda: _pil_png(textured, "P"),
        "grey_alpha": lambda: _pil_png(textured, "LA"),
        "rgba": lambda: _pil_png(textured, "RGBA"),
        "16_bit": lambda: cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes(),
        "interlaced": lambda: encode_png(grey, [0], interlace=1),
        "truncated": lambda: encode_png(grey, [1])[:-40],
        "corrupt": lambda: _damaged(encode_png(grey, [1])),
        "jpeg": lambda: cv2.imencode(".jpg", grey)[1].tobytes(),
        "empty": lambda: b"",
    }[case]()
    assert decode_png(raw, "grey" if case != "rgba" else "rgb") is None


def test_frame_folders_decode_through_the_fast_path_and_fall_back(tmp_path, textured: np.ndarray) -> None:
    """Sequences of PNG frames read the same pixels as OpenCV; a damaged PNG still gives the usual error."""
    grey = cv2.resize(textured[:, :, 2], (120, 90))
    paths = []
    for i, kind in enumerate([1, 4, 2]):
        path = tmp_path / f"f{i}.png"
        path.write_bytes(encode_png(np.roll(grey, i, axis=1), [kind, 3]))
        paths.append(str(path))
    source = SequenceSource("s", frame_paths=tuple(paths))
    frames = list(iter_frames(source, np.arange(3), color="grey", fps=30.0))
    for frame, path in zip(frames, paths, strict=True):
        assert np.array_equal(frame.image, cv2.imread(path, cv2.IMREAD_GRAYSCALE))
    rgb = list(iter_frames(source, np.arange(1), color="rgb", fps=30.0))[0].image
    assert rgb.shape == (90, 120, 3) and np.array_equal(rgb[:, :, 0], frames[0].image)
    damaged = tmp_path / "f1.png"
    damaged.write_bytes(damaged.read_bytes()[:70])
    with pytest.raises(StageError, match="unreadable image frame"):
        list(iter_frames(source, np.arange(3), color="grey", fps=30.0))
