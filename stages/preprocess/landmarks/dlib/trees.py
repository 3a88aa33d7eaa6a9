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
count and their items. So the file is one stream of integers: a small compiled loop decodes them (~0.4 s for the
~100 MB file), numpy cuts the stream into the arrays and checks every count and index (~0.3 s).
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

from stages.atomic_io import atomic_open, file_lock
from stages.errors import MissingWeightsError
from stages.preprocess.landmarks.base import Box
from stages.preprocess.landmarks.dlib.models import default_cache_dir

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


@nb.njit(cache=True, nogil=True)
def tokenize(buf, out):
    """Decode the integers of a dlib serialisation, in order, into ``out`` (int32); returns how many, or -1 when
    the bytes are not such a stream (a bad control byte, a value cut off by the end of the buffer, a value that
    does not fit int32, more values than ``out`` holds). Every read is checked against the end of ``buf``: the
    compiled loop does no bounds checks of its own."""
    pos = 0
    n = 0
    end = buf.shape[0]
    while pos < end:
        ctrl = buf[pos]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or (ctrl & 0x70) != 0 or pos + 1 + size > end or n >= out.shape[0]:
            return -1
        value = np.int64(0)
        for k in range(size):
            value |= np.int64(buf[pos + 1 + k]) << (8 * k)
        if value > 2147483647:
            return -1
        out[n] = -value if ctrl & 0x80 else value
        n += 1
        pos += 1 + size
    return n


class _Tokens:
    """A cursor over the integer stream: every method raises ``_Malformed`` instead of reading past the end."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.pos = 0

    def take(self, count: int, what: str) -> np.ndarray:
        if count < 0 or self.pos + count > len(self.values):
            raise _Malformed(f"truncated {what}")
        chunk = self.values[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def one(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def expect(self, values: np.ndarray, wanted: int, what: str) -> None:
        if not np.all(values == wanted):
            raise _Malformed(what)


class _Malformed(ValueError):
    pass


def _floats(pairs: np.ndarray) -> np.ndarray:
    """float64 values of [..., 2] (mantissa, exponent) pairs: mantissa * 2**exponent, or dlib's inf/-inf/nan."""
    mantissa, exponent = pairs[..., 0].astype(np.float64), pairs[..., 1]
    special = exponent >= _INF
    values = np.ldexp(mantissa, np.where(special, 0, exponent).astype(np.int32))
    if special.any():
        values[exponent == _INF] = np.inf
        values[exponent == _NINF] = -np.inf
        values[exponent == _NAN] = np.nan
    return values


def _parse_tokens(tok: _Tokens) -> TreeModel:
    """The model from dlib's ``shape_predictor`` serialisation (``serialize(shape_predictor)``): version 1, the
    mean shape, the forest (levels of trees: splits, then leaves), the anchor tables, the delta tables."""
    if tok.one("version field") != 1:
        raise _Malformed("not a dlib shape predictor (version field)")
    rows, cols = (abs(int(v)) for v in tok.take(2, "mean shape"))  # Python ints: sizes never wrap around
    dim = rows * cols
    if dim == 0 or dim % 2:
        raise _Malformed("bad mean shape")
    mean = _floats(tok.take(2 * dim, "mean shape").reshape(dim, 2))
    n_levels = tok.one("forest")
    first = tok.values[tok.pos : tok.pos + 2]
    if n_levels <= 0 or len(first) < 2 or first.min() <= 0:
        raise _Malformed("empty forest")
    n_trees, n_splits = (int(v) for v in first)
    n_leaves = n_splits + 1
    leaf_size = 2 + 2 * dim  # rows, cols, then (mantissa, exponent) per value
    tree_size = 1 + 4 * n_splits + 1 + n_leaves * leaf_size
    forest = tok.take(n_levels * (1 + n_trees * tree_size), "forest").reshape(n_levels, 1 + n_trees * tree_size)
    tok.expect(forest[:, 0], n_trees, "cascade levels of different sizes")
    trees = forest[:, 1:].reshape(n_levels, n_trees, tree_size)
    tok.expect(trees[:, :, 0], n_splits, "trees of different depths")
    splits = trees[:, :, 1 : 1 + 4 * n_splits].reshape(n_levels, n_trees, n_splits, 4)
    tok.expect(trees[:, :, 1 + 4 * n_splits], n_leaves, "tree with a leaf count that is not splits + 1")
    leaf_tokens = trees[:, :, 2 + 4 * n_splits :].reshape(n_levels, n_trees, n_leaves, leaf_size)
    leaf_rows, leaf_cols = (np.abs(leaf_tokens[..., i].astype(np.int64)) for i in (0, 1))
    tok.expect(leaf_rows * leaf_cols, dim, "bad leaf vector")
    leaves = np.empty((n_levels, n_trees, n_leaves, dim), np.float32)
    for c in range(n_levels):  # a level at a time: the float64 temporaries stay small
        leaves[c] = _floats(leaf_tokens[c, :, :, 2:].reshape(n_trees, n_leaves, dim, 2))
    if tok.one("anchor table") != n_levels:
        raise _Malformed("anchor table does not match the cascade")
    n_features = int(tok.values[tok.pos]) if tok.pos < len(tok.values) else 0
    if n_features <= 0:
        raise _Malformed("empty feature table")
    anchors = tok.take(n_levels * (1 + n_features), "anchor table").reshape(n_levels, 1 + n_features)
    tok.expect(anchors[:, 0], n_features, "feature tables of different sizes")
    anchors = anchors[:, 1:]
    if anchors.min() < 0 or 2 * anchors.max() >= dim:
        raise _Malformed("anchor index out of range")
    if tok.one("delta table") != n_levels:
        raise _Malformed("delta table does not match the cascade")
    deltas = tok.take(n_levels * (1 + 4 * n_features), "delta table").reshape(n_levels, 1 + 4 * n_features)
    tok.expect(deltas[:, 0], n_features, "delta tables of different sizes")
    if tok.pos != len(tok.values):
        raise _Malformed("trailing bytes after the model")
    split_a, split_b = splits[..., 0], splits[..., 1]
    if min(split_a.min(), split_b.min()) < 0 or max(split_a.max(), split_b.max()) >= n_features:
        raise _Malformed("split feature index out of range")
    return TreeModel(
        mean_shape=mean.astype(np.float32),
        split_a=split_a.astype(np.int32),
        split_b=split_b.astype(np.int32),
        split_thresh=_floats(splits[..., 2:]).astype(np.float32),
        leaves=leaves,
        anchors=anchors.astype(np.int32),
        deltas=_floats(deltas[:, 1:].reshape(n_levels, n_features, 2, 2)).astype(np.float32),
    )


def parse_model_file(path: str | Path) -> TreeModel:
    """Read a dlib shape predictor file (e.g. ``shape_predictor_68_face_landmarks.dat``) into a read-only
    :class:`TreeModel`; MissingWeightsError when the file is missing or not such a model.

    The file is first decoded into its integers by a small compiled loop (~0.4 s for the 68-point model; a
    loop this small also compiles in a fraction of a second on a fresh install), then cut into the arrays by
    numpy, checking every count and index."""
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise MissingWeightsError(f"{path}: cannot read the shape predictor: {exc}") from exc
    values = np.empty(len(buf) // 2 + 1, np.int32)  # every integer takes at least two bytes
    count = tokenize(buf, values)
    del buf
    try:
        if count < 0:
            raise _Malformed("not a dlib serialisation")
        model = _parse_tokens(_Tokens(values[:count]))
    except _Malformed as exc:
        raise MissingWeightsError(f"{path}: not a dlib shape predictor file ({exc})") from None
    arrays = {f.name: np.ascontiguousarray(getattr(model, f.name)) for f in fields(TreeModel)}
    for array in arrays.values():
        array.setflags(write=False)
    return TreeModel(**arrays)


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
CONVERT_LOCK_SECONDS = 120.0  # the longest a process waits for another's conversion before doing its own


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
    if model is not None:
        return model
    # Workers that start together would each convert it (~1 s of CPU each): one does, the others wait for it.
    with file_lock(entry.with_name(entry.name + ".lock"), timeout=CONVERT_LOCK_SECONDS):
        model = _read_converted(entry)  # written by another process while this one waited
        if model is None:
            model = parse_model_file(model_file)
            try:
                _write_converted(entry, model)
            except OSError:
                return model  # a read-only cache folder: parse every time
            model = _read_converted(entry) or model  # memory-mapped: workers share the pages
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


def warm_up_kernel() -> None:
    """Compile :func:`predict_kernel` into numba's on-disk cache without the model: the kernel is typed by its
    arrays' dtypes, ranks and flags only, so a one-tree model of the same kinds (read-only, C-contiguous, as
    loaded models are) compiles the same machine code."""
    tiny = TreeModel(
        mean_shape=np.array([0.5, 0.5], np.float32),
        split_a=np.zeros((1, 1, 1), np.int32),
        split_b=np.zeros((1, 1, 1), np.int32),
        split_thresh=np.zeros((1, 1, 1), np.float32),
        leaves=np.zeros((1, 1, 2, 2), np.float32),
        anchors=np.zeros((1, 1), np.int32),
        deltas=np.zeros((1, 1, 2), np.float32),
    )
    for name in _FIELDS:
        getattr(tiny, name).setflags(write=False)
    TreePredictor(tiny).predict(np.zeros((8, 8), np.uint8), (0, 0, 7, 7))
