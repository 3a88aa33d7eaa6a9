"""The bytes of one cache entry: arrays and metadata packed into one compact, self-verifying file, and read back.

Format 2 (what :func:`encode_entry` writes)::

    b"SQFA" | u32 (little-endian) length of the header | header: zlib-compressed JSON | payloads, in header order

The header holds ``format`` (2), ``meta`` (the caller's JSON metadata), ``checksum`` (blake2b-128 over every
array's name, dtype, shape and bytes, and the metadata) and per array ``[name, dtype, shape, codec, sizes]``. The
codec is chosen per array, each lossless:

- ``png``: uint8 image stacks (``[..., H, W]`` grey or ``[..., H, W, 3]`` colour, at least 8x8 pixels), their
  rows in PNG images of at most :data:`PNG_ROWS` rows each (``sizes`` lists their byte counts), every row with
  PNG's Average filter. An aligned 96x96 face crop takes ~5.8 KB instead of 9.2 KB;
- ``zlib``: other arrays of at least 256 bytes that deflate to less than 90 % (a trajectory resampled from one
  frame: 8.7 KB -> 0.65 KB);
- ``raw``: the rest (``sizes`` is their byte count in both cases).

Format 1 entries (``np.savez`` archives with ``__meta__``, ``__format__`` and ``__checksum__`` members) are still
read: :func:`decode_entry` tells the two apart by their first bytes, so a cache written before is reused.

:func:`decode_entry` verifies everything (the layout, each codec's own checks, every array's size, then the
checksum over the decoded arrays) and raises on any mismatch; the cache turns that into "damaged, recompute".
Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stages.jsonable import json_default

FORMAT = 2
MAGIC = b"SQFA"
PNG_ROWS = 8192
"""Rows of one PNG chunk (OpenCV reads PNG images up to 2**20 rows; a long video's crops span several chunks)."""
_PNG_PARAMS = None  # built lazily: cv2 is imported only when an image stack is written or read
_LEGACY = ("__meta__", "__format__", "__checksum__")


@dataclass
class CacheEntry:
    """A loaded entry: the caller's arrays and metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict


def canonical_json(obj: object) -> str:
    """Canonical JSON: sorted keys, no whitespace; pydantic models via ``model_dump(mode="json")``, paths as
    str, numpy values as Python values, tuples as lists."""
    return _CANONICAL.encode(obj)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default)
"""What ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default)`` uses,
built once (``json.dumps`` builds one per call with these arguments)."""
_HEADER = json.JSONEncoder(separators=(",", ":"))
"""An entry header's encoder: ``json.dumps(header, separators=(",", ":"))``, built once."""


def checksum(arrays: Mapping[str, np.ndarray], meta_json: str) -> str:
    """blake2b-128 (hex) over every array's name, dtype, shape and bytes (sorted by name), then the metadata."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.data if a.size else b"")
    h.update(meta_json.encode("utf-8"))
    return h.hexdigest()


# --- codecs -------------------------------------------------------------------------------------------------


def _image_rows(a: np.ndarray) -> tuple[int, int, int] | None:
    """(rows, width, channels) when ``a`` is a uint8 stack of grey or 3-channel images of at least 8x8, else None."""
    if a.dtype != np.uint8 or a.ndim < 2:
        return None
    channels = 3 if a.ndim >= 3 and a.shape[-1] == 3 else 1
    width = a.shape[-2] if channels == 3 else a.shape[-1]
    height = a.shape[-3] if channels == 3 else a.shape[-2]
    if width < 8 or height < 8:
        return None
    return a.size // (width * channels), width, channels


def _png_params() -> list[int]:
    global _PNG_PARAMS
    if _PNG_PARAMS is None:
        import cv2

        # level 3 with run-length matching: smallest of the PNG strategies on face crops, and among the fastest.
        # Every row with the Average filter, where OpenCV lets it be chosen: on 721 aligned 112 px crops of the
        # CK+-sized set 0.14-0.18 ms a frame to encode and 8.1 KB, against 0.25-0.30 ms and 7.8 KB for libpng's
        # choice per row (it tries every filter; at 96 px 5.8 against 5.4 KB); a cache write 0.28-0.31 ms a frame
        # against 0.41-0.46 ms in the pipeline (2026-12-07).
        _PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):
            _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_AVG]
    return _PNG_PARAMS


def _encode_png(a: np.ndarray, rows: int, width: int, channels: int) -> list[bytes]:
    import cv2

    flat = np.ascontiguousarray(a).reshape((rows, width, channels) if channels == 3 else (rows, width))
    chunks = []
    for start in range(0, rows, PNG_ROWS):
        ok, buf = cv2.imencode(".png", flat[start : start + PNG_ROWS], _png_params())
        if not ok:
            raise ValueError("PNG encoding failed")
        chunks.append(buf.tobytes())
    return chunks


def _decode_png(chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    parts = []
    for chunk in chunks:
        img = cv2.imdecode(np.frombuffer(chunk, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype != np.uint8:
            raise ValueError("a PNG chunk does not decode")
        parts.append(img)
    return np.concatenate(parts).reshape(shape)


def _encode_array(a: np.ndarray) -> tuple[str, list[int] | int, list[bytes]]:
    """(codec, sizes, payload pieces) of one array."""
    image = _image_rows(a)
    raw = np.ascontiguousarray(a).tobytes()
    if image is not None:
        chunks = _encode_png(a, *image)
        if sum(map(len, chunks)) < len(raw):
            return "png", [len(c) for c in chunks], chunks
    if len(raw) >= 256:
        packed = zlib.compress(raw, 6)
        if len(packed) < 0.9 * len(raw):
            return "zlib", len(packed), [packed]
    return "raw", len(raw), [raw]


# --- entries ------------------------------------------------------------------------------------------------


def encode_entry(arrays: Mapping[str, np.ndarray], meta: dict) -> bytes:
    """One entry's file content (format 2) for ``arrays`` (numeric, bool or str; not object) and JSON-able ``meta``."""
    meta_json = canonical_json(meta)
    layout, pieces = [], []
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object; the cache stores no pickled data")
        codec, sizes, data = _encode_array(a)
        layout.append([name, a.dtype.str, list(a.shape), codec, sizes])
        pieces.extend(data)
    header = {"format": FORMAT, "meta": meta_json, "checksum": checksum(arrays, meta_json), "arrays": layout}
    head = zlib.compress(_HEADER.encode(header).encode("utf-8"), 6)
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *pieces])


def decode_entry(data: bytes) -> CacheEntry:
    """The arrays and metadata of an entry's file content (format 2, or a format 1 npz archive). Raises (ValueError,
    zlib.error, KeyError, ...) when anything is damaged: the layout, a codec's checks, a size or the checksum."""
    if data[:2] == b"PK":
        return _decode_npz(data)
    if data[:4] != MAGIC:
        raise ValueError("not a cache entry")
    (head_len,) = struct.unpack_from("<I", data, 4)
    header = json.loads(zlib.decompress(data[8 : 8 + head_len]))
    if header["format"] != FORMAT:
        raise ValueError(f"cache format {header['format']}, expected {FORMAT}")
    view, pos = memoryview(data), 8 + head_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_str, shape, codec, sizes in header["arrays"]:
        dtype, shape = np.dtype(dtype_str), tuple(int(s) for s in shape)
        if dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object")
        if codec == "png":
            chunks = [bytes(view[pos + sum(sizes[:i]) : pos + sum(sizes[: i + 1])]) for i in range(len(sizes))]
            pos += sum(sizes)
            arrays[name] = _decode_png(chunks, shape)
            continue
        piece = bytes(view[pos : pos + sizes])
        pos += sizes
        raw = zlib.decompress(piece) if codec == "zlib" else piece if codec == "raw" else None
        if raw is None or len(raw) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"array {name!r}: codec {codec!r} or size does not match its shape")
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes beyond the last array")
    if checksum(arrays, header["meta"]) != header["checksum"]:
        raise ValueError("checksum mismatch")
    return CacheEntry(arrays=arrays, meta=json.loads(header["meta"]))


def _decode_npz(data: bytes) -> CacheEntry:
    """A format 1 entry: an ``np.savez`` archive whose ``__checksum__`` is the sha256 over its arrays (meta too)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}  # reading checks each member's zip CRC
    for name in _LEGACY:
        if name not in arrays:
            raise ValueError(f"missing {name}")
    if int(arrays.pop("__format__")) != 1:
        raise ValueError("an npz entry that is not format 1")
    stored = str(arrays.pop("__checksum__"))
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    if h.hexdigest() != stored:
        raise ValueError("checksum mismatch")
    meta = json.loads(str(arrays.pop("__meta__")))
    return CacheEntry(arrays=arrays, meta=meta)
