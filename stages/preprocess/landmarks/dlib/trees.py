"""dlib's 68-point shape predictor, evaluated from flat arrays by a compiled kernel.

dlib's own ``shape_predictor`` is an ensemble of regression trees (Kazemi & Sullivan, 2014): 15 cascade levels of
500 depth-4 trees, each leaf a 136-float shape update. It stores every tree's splits and every leaf in its own
heap block, so one call makes ~20,000 dependent memory reads spread over ~100 MB; on the development machines
that costs 2.1-3.6 ms per face, most of it waiting on memory (``perf`` puts 40-50 % of the samples on the loads
of the leaf vectors and split tables). Here the same model, read into contiguous arrays by
:mod:`~stages.preprocess.landmarks.dlib.model_format` (one ``[levels, trees, leaves, 136]`` block of leaves, one
table per split field; kept memory-mapped by :mod:`~stages.preprocess.landmarks.dlib.converted`), runs the same
algorithm in a numba kernel, which reads each cascade level's splits in order and overlaps the leaf reads.

The arithmetic follows dlib's ``shape_predictor::operator()`` step for step: the similarity transform from the
mean shape to the current shape (its linear part, in double, cast to float), the feature pixels placed relative
to their anchor points and rounded to the nearest pixel (0 outside the image), the split test
``f[idx1] - f[idx2] > thresh``, leaf updates added in float32 in tree order. The points come out rounded to
integer pixels as dlib's do (then they equal dlib's on almost every point; ``tests/test_landmarks_trees.py``
checks it), or unrounded (sub-pixel) with ``subpixel=True``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from stages.preprocess.landmarks.base import Box
from stages.preprocess.landmarks.dlib.model_format import TREE_FIELDS, TreeModel

LINE_FLOATS = 16
"""float32 values in a 64-byte cache line: a leaf's lines are requested every this many values."""


@intrinsic
def _prefetch(typingctx, arr, i, j, k, d):
    """Ask the CPU to start loading the cache line that holds ``arr[i, j, k, d]`` (a 4-d array), and return at
    once: LLVM's ``prefetch`` (a read, kept in every cache level). No bounds check; a hint, never a fault."""
    sig = types.void(arr, i, j, k, d)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:], strict=True)]
        byte_ptr = ir.IntType(8).as_pointer()
        address = builder.bitcast(cgutils.get_item_pointer(context, builder, array_type, array, index), byte_ptr)
        i32 = ir.IntType(32)
        # the typed-pointer name: LLVM before 15 requires it, later versions rename it to ``llvm.prefetch.p0``
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, inline="always")
def _centroid(xy, n_points):
    """Mean (x, y), in double, of ``n_points`` points stored interleaved (x0, y0, x1, y1, ...)."""
    cx = 0.0
    cy = 0.0
    for i in range(n_points):
        cx += xy[2 * i]
        cy += xy[2 * i + 1]
    return cx / n_points, cy / n_points


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
    mx0, my0 = _centroid(mean, n_points)
    for c in range(n_levels):
        # similarity (linear part) from the mean shape to the current one: least squares in double
        cx, cy = _centroid(shape, n_points)
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
        # every tree's leaf first (the split tables are read in order), each leaf's cache lines requested as soon
        # as it is known, then the leaf updates, added in tree order as dlib does. The step down a tree is
        # arithmetic, not a branch: the split tests depend on the image, so a branch predictor cannot learn them
        for t in range(n_trees):
            node = 0
            while node < n_splits:
                node = (
                    2 * node
                    + 2
                    - np.int64(feats[split_a[c, t, node]] - feats[split_b[c, t, node]] > thresh[c, t, node])
                )
            leaf_index = node - n_splits
            chosen[t] = leaf_index
            for d in range(0, dim, LINE_FLOATS):
                _prefetch(leaves, c, t, leaf_index, d)
            _prefetch(leaves, c, t, leaf_index, dim - 1)  # the last line, when a leaf starts mid-line
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
    for name in TREE_FIELDS:
        getattr(tiny, name).setflags(write=False)
    TreePredictor(tiny).predict(np.zeros((8, 8), np.uint8), (0, 0, 7, 7))
