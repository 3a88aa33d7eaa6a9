"""Read dlib's shape predictor file into flat arrays (:class:`TreeModel`).

The model file is dlib's binary serialisation (``dlib/serialize.h``): integers as a control byte (low nibble:
byte count, 0x80: negative) followed by little-endian magnitude bytes; floats as an integer mantissa and an
integer exponent (value = mantissa * 2**exponent); matrices as -rows, -cols and their values; vectors as a
count and their items. So the file is one stream of integers: a small compiled loop decodes them (~0.4 s for the
~100 MB file), numpy cuts the stream into the arrays and checks every count and index (~0.3 s).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numba as nb
import numpy as np

from stages.errors import MissingWeightsError

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


TREE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TreeModel))
"""The array fields of :class:`TreeModel`, in order."""


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
    arrays = {name: np.ascontiguousarray(getattr(model, name)) for name in TREE_FIELDS}
    for array in arrays.values():
        array.setflags(write=False)
    return TreeModel(**arrays)
