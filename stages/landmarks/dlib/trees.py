"""dlib's 68-point shape predictor, evaluated from flat arrays by a compiled kernel.

dlib's own ``shape_predictor`` is an ensemble of regression trees (Kazemi & Sullivan, 2014): 15 cascade levels of
500 depth-4 trees, each leaf a 136-float shape update. It stores every tree's splits and every leaf in its own
heap block, so one call makes ~20,000 dependent memory reads spread over ~100 MB; on the development machines
that costs 2.1-3.6 ms per face, most of it waiting on memory (``perf`` puts 40-50 % of the samples on the loads
of the leaf vectors and split tables). This module reads the same model file into contiguous arrays (one
``[levels, trees, leaves, 136]`` block of leaves, one table per split field) and runs the same algorithm in a
numba kernel, which reads each cascade level's splits in order and overlaps the leaf reads.

The arithmetic follows dlib's ``shape_predictor::operator()`` step for step: the similarity transform from the
mean shape to the current shape (its linear part, in double, cast to float), the feature pixels placed relative
to their anchor points and rounded to the nearest pixel (0 outside the image), the split test
``f[idx1] - f[idx2] > thresh``, leaf updates added in float32 in tree order. The points come out rounded to
integer pixels as dlib's do (then they equal dlib's on almost every point; ``tests/test_landmarks_trees.py``
checks it), or unrounded (sub-pixel) with ``subpixel=True``.

The model file is dlib's binary serialisation (``dlib/serialize.h``): integers as a control byte (low nibble:
byte count, 0x80: negative) followed by little-endian magnitude bytes; floats as an integer mantissa and an
integer exponent (value = mantissa * 2**exponent); matrices as -rows, -cols and their values; vectors as a
count and their items. Parsing ~100 MB takes a compiled loop (~0.4 s), not Python.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, fields
from pathlib import Path

import numba as nb
import numpy as np
from isal import isal_zlib as _isal  # its CRC-32 is ~7x zlib's

from stages.atomic_io import atomic_open
from stages.errors import MissingWeightsError
from stages.landmarks.base import Box
from stages.landmarks.dlib.models import default_cache_dir

_INF, _NINF, _NAN = 32000, 32001, 32002  # dlib float_details special exponents


@dataclass(frozen=True)
class TreeModel:
    """A shape predictor's parameters as flat arrays.

    - ``mean_shape`` [2P] float32: the initial shape, (x0, y0, x1, y1, ...) in box-normalised units;
    - ``split_a``, ``split_b`` [C, T, S] int32: feature indices of each split (S = leaves - 1, heap order);
    - ``split_thresh`` [C, T, S] float32;
    - ``leaves`` [C, T, L, 2P] float32: shape updates;
    - ``anchors`` [C, F] int32: the landmark each feature pixel is placed relative to;
    - ``deltas`` [C, F, 2] float32: its offset from that landmark in mean-shape units.
    """

    mean_shape: np.ndarray
    split_a: np.ndarray
    split_b: np.ndarray
    split_thresh: np.ndarray
    leaves: np.ndarray
    anchors: np.ndarray
    deltas: np.ndarray

    @property
    def n_points(self) -> int:
        return self.mean_shape.shape[0] // 2


@nb.njit(cache=True)
def read_int(buf, pos):
    """(value, next position) of the integer at ``pos``; position -1 when there is none (also past the end:
    the compiled loop does no bounds checks of its own, so every read is checked here)."""
    if pos < 0 or pos >= buf.shape[0]:
        return 0, -1
    ctrl = buf[pos]
    size = ctrl & 0x0F
    if size == 0 or size > 8 or (ctrl & 0x70) != 0 or pos + 1 + size > buf.shape[0]:
        return 0, -1
    value = 0
    for k in range(size):
        value |= np.int64(buf[pos + 1 + k]) << (8 * k)
    if ctrl & 0x80:
        value = -value
    return value, pos + 1 + size


@nb.njit(cache=True)
def read_float(buf, pos):
    mantissa, pos = read_int(buf, pos)
    if pos < 0:
        return 0.0, -1
    exponent, pos = read_int(buf, pos)
    if pos < 0:
        return 0.0, -1
    if exponent == _INF:
        return np.inf, pos
    if exponent == _NINF:
        return -np.inf, pos
    if exponent == _NAN:
        return np.nan, pos
    return float(mantissa) * 2.0**exponent, pos


@nb.njit(cache=True)
def read_matrix(buf, pos, out):
    """A float column matrix into ``out`` (its size must match); returns the new position or -1."""
    nr, pos = read_int(buf, pos)
    if pos < 0:
        return -1
    nc, pos = read_int(buf, pos)
    if pos < 0 or abs(nr) * abs(nc) != out.shape[0]:
        return -1
    for k in range(out.shape[0]):
        v, pos = read_float(buf, pos)
        if pos < 0:
            return -1
        out[k] = v
    return pos


@nb.njit(cache=True)
def _failed(code):
    """The parse result for an error: empty arrays of the right types and the error code."""
    e_i3 = np.zeros((0, 0, 0), np.int32)
    e_f3 = np.zeros((0, 0, 0), np.float32)
    return (
        np.zeros(0, np.float32),
        e_i3,
        e_i3,
        e_f3,
        np.zeros((0, 0, 0, 0), np.float32),
        np.zeros((0, 0), np.int32),
        e_f3,
        code,
    )


@nb.njit(cache=True)
def parse(buf):
    """(arrays..., error): error 0 on success, else a key of ``_PARSE_ERRORS``."""
    version, pos = read_int(buf, 0)
    if pos < 0 or version != 1:
        return _failed(1)
    # initial shape: peek its size
    nr, p2 = read_int(buf, pos)
    nc, p2 = read_int(buf, p2)
    if p2 < 0:
        return _failed(2)
    if abs(nr) * abs(nc) == 0 or (abs(nr) * abs(nc)) % 2:
        return _failed(3)
    mean = np.empty(abs(nr) * abs(nc), np.float64)
    pos = read_matrix(buf, pos, mean)
    if pos < 0:
        return _failed(3)
    n_levels, pos = read_int(buf, pos)
    # the first tree fixes the sizes; every other tree must match
    n_trees, q = read_int(buf, pos)
    n_splits, q = read_int(buf, q)
    if q < 0 or n_levels <= 0 or n_trees <= 0 or n_splits <= 0:
        return _failed(4)
    n_leaves = n_splits + 1
    dim = mean.shape[0]
    split_a = np.empty((n_levels, n_trees, n_splits), np.int32)
    split_b = np.empty((n_levels, n_trees, n_splits), np.int32)
    thresh = np.empty((n_levels, n_trees, n_splits), np.float32)
    leaves = np.empty((n_levels, n_trees, n_leaves, dim), np.float32)
    leaf = np.empty(dim, np.float64)
    for c in range(n_levels):
        count, pos = read_int(buf, pos)
        if pos < 0 or count != n_trees:
            return _failed(5)
        for t in range(n_trees):
            count, pos = read_int(buf, pos)
            if pos < 0 or count != n_splits:
                return _failed(6)
            for s in range(n_splits):
                a, pos = read_int(buf, pos)
                b, pos = read_int(buf, pos)
                th, pos = read_float(buf, pos)
                if pos < 0:
                    return _failed(7)
                split_a[c, t, s] = a
                split_b[c, t, s] = b
                thresh[c, t, s] = th
            count, pos = read_int(buf, pos)
            if pos < 0 or count != n_leaves:
                return _failed(8)
            for k in range(n_leaves):
                pos = read_matrix(buf, pos, leaf)
                if pos < 0:
                    return _failed(9)
                for d in range(dim):
                    leaves[c, t, k, d] = leaf[d]
    count, pos = read_int(buf, pos)
    if pos < 0 or count != n_levels:
        return _failed(10)
    n_features, q = read_int(buf, pos)
    if q < 0 or n_features <= 0:
        return _failed(11)
    anchors = np.empty((n_levels, n_features), np.int32)
    for c in range(n_levels):
        count, pos = read_int(buf, pos)
        if pos < 0 or count != n_features:
            return _failed(12)
        for f in range(n_features):
            a, pos = read_int(buf, pos)
            if pos < 0 or a < 0 or 2 * a >= dim:
                return _failed(13)
            anchors[c, f] = a
    count, pos = read_int(buf, pos)
    if pos < 0 or count != n_levels:
        return _failed(14)
    deltas = np.empty((n_levels, n_features, 2), np.float32)
    for c in range(n_levels):
        count, pos = read_int(buf, pos)
        if pos < 0 or count != n_features:
            return _failed(15)
        for f in range(n_features):
            x, pos = read_float(buf, pos)
            y, pos = read_float(buf, pos)
            if pos < 0:
                return _failed(16)
            deltas[c, f, 0] = x
            deltas[c, f, 1] = y
    if pos != buf.shape[0]:
        return _failed(17)
    for c in range(n_levels):
        for t in range(n_trees):
            for s in range(n_splits):
                if not (0 <= split_a[c, t, s] < n_features and 0 <= split_b[c, t, s] < n_features):
                    return _failed(18)
    return mean.astype(np.float32), split_a, split_b, thresh, leaves, anchors, deltas, 0


_PARSE_ERRORS = {
    1: "not a dlib shape predictor (version field)",
    2: "truncated mean shape",
    3: "bad mean shape",
    4: "empty forest",
    5: "cascade levels of different sizes",
    6: "trees of different depths",
    7: "truncated split",
    8: "tree with a leaf count that is not splits + 1",
    9: "bad leaf vector",
    10: "anchor table does not match the cascade",
    11: "empty feature table",
    12: "feature tables of different sizes",
    13: "anchor index out of range",
    14: "delta table does not match the cascade",
    15: "delta tables of different sizes",
    16: "truncated delta",
    17: "trailing bytes after the model",
    18: "split feature index out of range",
}


def parse_model_file(path: str | Path) -> TreeModel:
    """Read a dlib shape predictor file (e.g. ``shape_predictor_68_face_landmarks.dat``) into a read-only
    :class:`TreeModel`; MissingWeightsError when the file is missing or not such a model."""
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise MissingWeightsError(f"{path}: cannot read the shape predictor: {exc}") from exc
    *arrays, error = parse(buf)
    if error:
        raise MissingWeightsError(f"{path}: not a dlib shape predictor file ({_PARSE_ERRORS[error]})")
    for array in arrays:
        array.setflags(write=False)
    return TreeModel(*arrays)


# ------------------------------------------------------------------------------------------ converted copies
#
# Parsing takes ~0.4-0.8 s of every worker's start. The arrays are kept instead in one file per model file (keyed
# by its path, size and modification time): a JSON header (names, dtypes, shapes, offsets, a CRC-32 of the
# data), then the raw arrays. It is memory-mapped, so workers on one machine share its pages. A missing,
# damaged or foreign entry is re-parsed and rewritten; a folder that cannot be written is simply not used.

CACHE_FORMAT = 1
_FIELDS = tuple(f.name for f in fields(TreeModel))
_ALIGN = 64
_MAX_HEADER = 1 << 16


def converted_path(model_file: Path, cache_dir: Path) -> Path:
    """Where the converted copy of ``model_file`` lives under ``cache_dir``."""
    st = model_file.stat()
    where = hashlib.sha256(str(model_file.resolve()).encode()).hexdigest()[:12]
    return cache_dir / "dlib_trees" / f"{model_file.stem}-{st.st_size}-{st.st_mtime_ns}-{where}.v{CACHE_FORMAT}.bin"


def _write_converted(path: Path, model: TreeModel) -> None:
    arrays = [np.ascontiguousarray(getattr(model, name)) for name in _FIELDS]
    entries, offset = [], 0
    for name, array in zip(_FIELDS, arrays, strict=True):
        entries.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    crc = 0
    for array in arrays:
        crc = _isal.crc32(memoryview(array).cast("B"), crc)
    header = json.dumps({"format": CACHE_FORMAT, "arrays": entries, "bytes": offset, "crc32": crc}).encode()
    start = -(-(8 + len(header)) // _ALIGN) * _ALIGN
    with atomic_open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header + b"\0" * (start - 8 - len(header)))
        for array in arrays:
            fh.write(memoryview(array).cast("B"))
            fh.write(b"\0" * (-array.nbytes % _ALIGN))


def _read_converted(path: Path) -> TreeModel | None:
    """The model in ``path``, or None when it is missing, damaged or of another format."""
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > _MAX_HEADER:
                return None
            header = json.loads(fh.read(size))
        start = -(-(8 + size) // _ALIGN) * _ALIGN
        if header.get("format") != CACHE_FORMAT or [e["name"] for e in header["arrays"]] != list(_FIELDS):
            return None
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(int(header["bytes"]),))
        arrays, crc = [], 0
        for entry in header["arrays"]:
            dtype = np.dtype(entry["dtype"])
            count = int(np.prod(entry["shape"]))
            chunk = data[entry["offset"] : entry["offset"] + count * dtype.itemsize]
            crc = _isal.crc32(chunk, crc)
            arrays.append(chunk.view(dtype).reshape(entry["shape"]).view(np.ndarray))
        if crc != header["crc32"]:
            return None
        model = TreeModel(*arrays)
        return model if _consistent(model) else None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _consistent(model: TreeModel) -> bool:
    """Whether the arrays fit together as the kernel reads them (it does no bounds checks): what the parser
    checks, asked again of a copy read from disk, whose header the CRC does not cover."""
    levels, trees, splits = model.split_a.shape
    features = model.anchors.shape[1] if model.anchors.ndim == 2 else 0
    dim = model.mean_shape.shape[0]
    return (
        dim > 0
        and dim % 2 == 0
        and model.split_b.shape == model.split_thresh.shape == (levels, trees, splits)
        and model.leaves.shape == (levels, trees, splits + 1, dim)
        and model.anchors.shape == (levels, features)
        and model.deltas.shape == (levels, features, 2)
        and features > 0
        and 0 <= int(model.anchors.min())
        and 2 * int(model.anchors.max()) < dim
        and 0 <= int(min(model.split_a.min(), model.split_b.min()))
        and int(max(model.split_a.max(), model.split_b.max())) < features
    )


def load_tree_model(model_file: str | Path, cache_dir: Path | None = None, use_cache: bool = True) -> TreeModel:
    """The shape predictor in ``model_file`` as a read-only :class:`TreeModel`, from its converted copy under
    ``cache_dir`` (default :func:`default_cache_dir`) when there is a sound one, else parsed (and the copy
    written). MissingWeightsError when the file is missing or not a dlib shape predictor."""
    model_file = Path(model_file)
    if not model_file.is_file():
        raise MissingWeightsError(f"{model_file}: shape predictor file not found")
    if not use_cache:
        return parse_model_file(model_file)
    entry = converted_path(model_file, cache_dir or default_cache_dir())
    model = _read_converted(entry)
    if model is None:
        model = parse_model_file(model_file)
        try:
            _write_converted(entry, model)
        except OSError:
            pass  # a read-only cache folder: parse every time
    return model


@nb.njit(cache=True, nogil=True)
def predict_kernel(img, left, top, right, bottom, mean, split_a, split_b, thresh, leaves, anchors, deltas, out):
    n_levels, n_trees, n_splits = split_a.shape
    dim = mean.shape[0]
    n_points = dim // 2
    n_features = anchors.shape[1]
    height, width = img.shape
    shape = mean.copy()
    feats = np.empty(n_features, np.float32)
    chosen = np.empty(n_trees, np.int64)
    # unnormalizing transform of the box (dlib's rectangle corners: right/bottom inclusive)
    sx = right - left
    sy = bottom - top
    mx0 = 0.0
    my0 = 0.0
    for i in range(n_points):
        mx0 += mean[2 * i]
        my0 += mean[2 * i + 1]
    mx0 /= n_points
    my0 /= n_points
    for c in range(n_levels):
        # similarity (linear part) from the mean shape to the current one: least squares in double
        cx = 0.0
        cy = 0.0
        for i in range(n_points):
            cx += shape[2 * i]
            cy += shape[2 * i + 1]
        cx /= n_points
        cy /= n_points
        dot = 0.0
        cross = 0.0
        norm = 0.0
        for i in range(n_points):
            fx = mean[2 * i] - mx0
            fy = mean[2 * i + 1] - my0
            tx = shape[2 * i] - cx
            ty = shape[2 * i + 1] - cy
            dot += fx * tx + fy * ty
            cross += fx * ty - fy * tx
            norm += fx * fx + fy * fy
        a = np.float32(dot / norm) if norm > 0 else np.float32(1.0)
        b = np.float32(cross / norm) if norm > 0 else np.float32(0.0)
        for f in range(n_features):
            dx = deltas[c, f, 0]
            dy = deltas[c, f, 1]
            k = anchors[c, f]
            px = np.float32(a * dx - b * dy) + shape[2 * k]
            py = np.float32(b * dx + a * dy) + shape[2 * k + 1]
            ix = int(math.floor(left + sx * np.float64(px) + 0.5))
            iy = int(math.floor(top + sy * np.float64(py) + 0.5))
            if 0 <= ix < width and 0 <= iy < height:
                feats[f] = img[iy, ix]
            else:
                feats[f] = 0.0
        # every tree's leaf first (the split tables are read in order), then the leaf updates: their reads
        # are independent of one another, so they overlap; added in tree order, as dlib does
        for t in range(n_trees):
            node = 0
            while node < n_splits:
                if feats[split_a[c, t, node]] - feats[split_b[c, t, node]] > thresh[c, t, node]:
                    node = 2 * node + 1
                else:
                    node = 2 * node + 2
            chosen[t] = node - n_splits
        for t in range(n_trees):
            leaf = leaves[c, t, chosen[t]]
            for d in range(dim):
                shape[d] += leaf[d]
    for i in range(n_points):
        out[i, 0] = left + sx * np.float64(shape[2 * i])
        out[i, 1] = top + sy * np.float64(shape[2 * i + 1])


class TreePredictor:
    """A :class:`TreeModel` as a point predictor: ``predict(grey, box)`` -> [P, 2] float32 source pixels (x, y),
    whole pixels as dlib's (``subpixel=False``) or unrounded.

    ``grey`` is uint8 [H, W] (C-contiguous); ``box`` (left, top, right, bottom) pixels, rounded to integers as
    dlib's rectangle does. The kernel is compiled on first use (cached on disk by numba)."""

    def __init__(self, model: TreeModel, subpixel: bool = False) -> None:
        self.model = model
        self.subpixel = subpixel

    def predict(self, grey: np.ndarray, box: Box) -> np.ndarray:
        if grey.ndim != 2 or grey.dtype != np.uint8:
            raise ValueError(f"grey must be uint8 [H, W]; got {grey.dtype} {grey.shape}")
        left, top, right, bottom = (int(round(v)) for v in box)
        right, bottom = max(right, left + 1), max(bottom, top + 1)
        m = self.model
        out = np.empty((m.n_points, 2), np.float64)
        predict_kernel(
            np.ascontiguousarray(grey),
            float(left),
            float(top),
            float(right),
            float(bottom),
            m.mean_shape,
            m.split_a,
            m.split_b,
            m.split_thresh,
            m.leaves,
            m.anchors,
            m.deltas,
            out,
        )
        return (out if self.subpixel else np.floor(out + 0.5)).astype(np.float32)
