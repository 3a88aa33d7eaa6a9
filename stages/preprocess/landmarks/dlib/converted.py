"""Converted copies of parsed shape predictors, memory-mapped so a machine's workers share their pages.

Parsing takes ~0.4-0.8 s of every worker's start. The arrays are kept instead in one file per model file (keyed
by its path, size and modification time): a JSON header (names, dtypes, shapes, offsets, a CRC-32 of the
data), then the raw arrays. It is memory-mapped, so workers on one machine share its pages. A missing,
damaged or foreign entry is re-parsed and rewritten; a folder that cannot be written is simply not used.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
from isal import isal_zlib as _isal  # its CRC-32 is ~7x zlib's

from stages.atomic_io import atomic_open, file_lock
from stages.errors import MissingWeightsError
from stages.preprocess.landmarks.dlib.cache_dir import default_cache_dir
from stages.preprocess.landmarks.dlib.model_format import TREE_FIELDS, TreeModel, parse_model_file

CACHE_FORMAT = 1
_ALIGN = 64
_MAX_HEADER = 1 << 16
CONVERT_LOCK_SECONDS = 120.0  # the longest a process waits for another's conversion before doing its own


def converted_path(model_file: Path, cache_dir: Path) -> Path:
    """Where the converted copy of ``model_file`` lives under ``cache_dir``."""
    st = model_file.stat()
    where = hashlib.sha256(str(model_file.resolve()).encode()).hexdigest()[:12]
    return cache_dir / "dlib_trees" / f"{model_file.stem}-{st.st_size}-{st.st_mtime_ns}-{where}.v{CACHE_FORMAT}.bin"


def _write_converted(path: Path, model: TreeModel) -> None:
    arrays = [np.ascontiguousarray(getattr(model, name)) for name in TREE_FIELDS]
    entries, offset = [], 0
    for name, array in zip(TREE_FIELDS, arrays, strict=True):
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
        if header.get("format") != CACHE_FORMAT or [e["name"] for e in header["arrays"]] != list(TREE_FIELDS):
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
