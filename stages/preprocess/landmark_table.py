"""Per-frame landmark tables that OpenFace 2 and py-feat users can read, and a reader for real OpenFace CSVs.

Columns, in order (the shared ones named and ordered as in OpenFace 2's ``FeatureExtraction`` CSV):

==============  ========  ==================================================================================
``frame``       int64     1-based frame number in the source (OpenFace's convention) = ``source_index + 1``
``timestamp``   float64   seconds from the start of the source
``confidence``  float32   landmark confidence in [0, 1]
``success``     int64     1 = face and landmarks found, 0 = not (its x/y are then NaN)
``x_0..x_67``   float32   landmark x in source pixels, 0-based (pixel centres at integers), iBUG-68 order
``y_0..y_67``   float32   landmark y, same conventions
``sequence_id`` str       the manifest's sequence id
``source_index`` int64    0-based index of the frame in the source (frame list or video)
==============  ========  ==================================================================================

One row per kept frame (frame selection may skip source frames; ``frame`` says which). OpenFace writes zeros
for the landmarks of a failed frame; we write NaN, and :func:`read_openface_csv` turns OpenFace's zeros into
NaN too, so tables from both tools can be merged on ``frame`` and compared directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.face_geometry import N_POINTS

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made or read: a preprocess worker writes Parquet
    import pandas as pd  # straight from arrays and never needs it (~0.3 s of each worker's start)

FRAME_COLUMNS = ["frame", "timestamp", "confidence", "success"]
X_COLUMNS = [f"x_{i}" for i in range(N_POINTS)]
Y_COLUMNS = [f"y_{i}" for i in range(N_POINTS)]
ID_COLUMNS = ["sequence_id", "source_index"]
COLUMNS = FRAME_COLUMNS + X_COLUMNS + Y_COLUMNS + ID_COLUMNS
"""Every column of a landmark table, in order."""

_DTYPES: dict[str, object] = {
    "frame": np.int64,
    "timestamp": np.float64,
    "confidence": np.float32,
    "success": np.int64,
    **{c: np.float32 for c in X_COLUMNS + Y_COLUMNS},
    "source_index": np.int64,
}


def landmark_table(
    sequence_id: str,
    frame_indices: np.ndarray,
    timestamps: np.ndarray,
    confidence: np.ndarray,
    success: np.ndarray,
    points: np.ndarray,
) -> pd.DataFrame:
    """One row per frame. ``frame_indices`` [T] 0-based source indices, ``timestamps`` [T] seconds,
    ``confidence`` [T], ``success`` [T] bool, ``points`` [T, 68, 2] (x, y) source pixels, 0-based.

    Columns and dtypes as in the module docstring; landmarks of frames without success are NaN.
    """
    import pandas as pd

    return pd.DataFrame(
        landmark_columns(sequence_id, frame_indices, timestamps, confidence, success, points), columns=COLUMNS
    )


def landmark_columns(
    sequence_id: str | np.ndarray,
    frame_indices: np.ndarray,
    timestamps: np.ndarray,
    confidence: np.ndarray,
    success: np.ndarray,
    points: np.ndarray,
) -> dict[str, np.ndarray]:
    """The table of :func:`landmark_table` as its column arrays, in ``COLUMNS`` order (what
    :func:`write_landmark_table` writes without building a DataFrame). ``sequence_id`` is one id for every row,
    or an array of one id per row: the rows of many sequences in one call (a batch of one-image items costs one
    call, not one per item)."""
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    n = len(idx)
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    conf = np.asarray(confidence, dtype=np.float32).reshape(-1)
    ok = np.asarray(success, dtype=bool).reshape(-1)
    pts = np.asarray(points, dtype=np.float32)
    if pts.size == 0 and n == 0:
        pts = pts.reshape(0, N_POINTS, 2)
    if ts.shape != (n,) or conf.shape != (n,) or ok.shape != (n,) or pts.shape != (n, N_POINTS, 2):
        name = sequence_id if isinstance(sequence_id, str) else "a batch"
        raise StageError(
            f"landmark_table({name!r}): {n} frame indices but timestamps {ts.shape}, confidence "
            f"{conf.shape}, success {ok.shape}, points {pts.shape} (expected [{n}, {N_POINTS}, 2])"
        )
    pts = np.where(ok[:, None, None], pts, np.float32(np.nan))
    columns: dict[str, np.ndarray] = {
        "frame": idx + 1,
        "timestamp": ts,
        "confidence": conf,
        "success": ok.astype(np.int64),
    }
    columns.update({c: pts[:, i, 0] for i, c in enumerate(X_COLUMNS)})
    columns.update({c: pts[:, i, 1] for i, c in enumerate(Y_COLUMNS)})
    if isinstance(sequence_id, np.ndarray):
        if sequence_id.shape != (n,):
            raise StageError(f"landmark_columns: {n} frame indices but {sequence_id.shape} sequence ids")
        columns["sequence_id"] = sequence_id.astype(object)
    else:
        columns["sequence_id"] = np.full(n, str(sequence_id), dtype=object)
    columns["source_index"] = idx
    return {c: columns[c] for c in COLUMNS}


def table_points(df: pd.DataFrame) -> np.ndarray:
    """The landmarks of a table as [T, 68, 2] float32 (x, y) source pixels (NaN where missing)."""
    x = df[X_COLUMNS].to_numpy(dtype=np.float32)
    y = df[Y_COLUMNS].to_numpy(dtype=np.float32)
    return np.stack([x, y], axis=-1)


def arrow_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    """``columns`` (1-D numeric or bool arrays, or object arrays of str) as the Arrow table ``pa.table(columns)``
    gives, built from the arrays' buffers: ``pa.table`` and ``pa.array`` import pandas on their first call (~0.3 s
    of every preprocess worker's start), ``pa.Array.from_buffers`` does not."""
    arrays = []
    for values in columns.values():
        n = len(values)
        if values.dtype == object:
            data = [v.encode("utf-8") for v in values]
            offsets = np.zeros(n + 1, np.int32)
            np.cumsum([len(d) for d in data], out=offsets[1:])
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
            arrays.append(pa.Array.from_buffers(pa.string(), n, buffers))
        elif values.dtype == np.bool_:  # Arrow keeps booleans as bits
            bits = np.packbits(values, bitorder="little")
            arrays.append(pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bits)]))
        else:
            flat = np.ascontiguousarray(values)
            arrays.append(pa.Array.from_buffers(pa.from_numpy_dtype(flat.dtype), n, [None, pa.py_buffer(flat)]))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_landmark_table(table: pd.DataFrame | dict[str, np.ndarray], path: Path, csv: bool = False) -> None:
    """Write ``table`` (a :func:`landmark_table` DataFrame or :func:`landmark_columns` arrays) as Parquet at
    ``path`` (atomically: temp file + rename) and, with ``csv``, a CSV copy beside it (``path`` with suffix
    ``.csv``; comma-separated, empty fields for NaN)."""
    path = Path(path)
    columns = table if isinstance(table, dict) else {c: table[c].to_numpy() for c in table.columns}
    # Straight from the column arrays: pandas' generic converter costs ~3x more for these 140-column tables.
    arrow = arrow_table(columns)
    # dictionary encoding only where values repeat (the id): on 136 float columns it halves the write speed
    _atomic(path, lambda tmp: pq.write_table(arrow, tmp, write_statistics=False, use_dictionary=["sequence_id"]))
    if csv:
        import pandas as pd

        df = pd.DataFrame(columns)
        _atomic(path.with_suffix(".csv"), lambda tmp: df.to_csv(tmp, index=False))


def apply_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the documented dtype of each table column it has."""
    return df.astype({c: t for c, t in _DTYPES.items() if c in df.columns})


def read_landmark_table(path: Path) -> pd.DataFrame:
    """Read a table written by :func:`write_landmark_table` (``.parquet`` or ``.csv``) with its dtypes."""
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, skipinitialspace=True, dtype={"sequence_id": str})
        else:
            df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read landmark table {path}: {exc}") from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise StageError(f"landmark table {path} lacks columns {missing[:6]}")
    return apply_dtypes(df)


def read_openface_csv(path: Path, face_id: int | None = None, keep_extra: bool = False) -> pd.DataFrame:
    """Read an OpenFace 2 ``FeatureExtraction`` CSV into the columns of :func:`landmark_table`.

    OpenFace pads its header and values with spaces (``frame, timestamp, ...``): both are stripped. Its
    ``frame`` is 1-based, like ours; ``source_index`` = frame - 1; ``sequence_id`` = the file's stem.
    Landmarks of rows with success 0 become NaN (OpenFace writes zeros). Files from versions that write a
    ``face_id`` column (multi-face) keep the rows of ``face_id`` (required when there are several faces).
    ``keep_extra`` appends OpenFace's other columns (gaze, pose, AUs...) after ours.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read OpenFace CSV {path}: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    required = FRAME_COLUMNS + X_COLUMNS + Y_COLUMNS
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StageError(f"{path} is not an OpenFace landmark CSV: it lacks columns {missing[:6]}")
    if "face_id" in df.columns:
        faces = sorted(pd.unique(df["face_id"]).tolist())
        if face_id is None and len(faces) > 1:
            raise StageError(f"{path} holds several faces (face_id {faces}); choose one with face_id")
        if face_id is not None:
            if face_id not in faces:
                raise StageError(f"{path} has no face_id {face_id} (it has {faces})")
            df = df[df["face_id"] == face_id]
    df = df.reset_index(drop=True)
    ok = df["success"].to_numpy() != 0
    points = np.stack([df[X_COLUMNS].to_numpy(dtype=np.float32), df[Y_COLUMNS].to_numpy(dtype=np.float32)], axis=-1)
    frames = df["frame"].to_numpy(dtype=np.int64)
    table = landmark_table(
        path.stem,
        frames - 1,
        df["timestamp"].to_numpy(dtype=np.float64),
        df["confidence"].to_numpy(dtype=np.float32),
        ok,
        points,
    )
    if keep_extra:
        extra = [c for c in df.columns if c not in required]
        table = pd.concat([table, df[extra]], axis=1)
    return table
