"""OpenFace-compatible landmark tables (stages.preprocess.landmark_table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.errors import StageError
from stages.preprocess.landmark_table import (
    COLUMNS,
    arrow_table,
    landmark_columns,
    landmark_table,
    read_landmark_table,
    read_openface_csv,
    table_points,
    write_landmark_table,
)

OPENFACE_SHARED = (
    ["frame", "timestamp", "confidence", "success"] + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
)


def _table(n: int = 5, failed=(2,)) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    pts = (rng.random((n, 68, 2)) * 300).astype(np.float32)
    ok = np.ones(n, dtype=bool)
    ok[list(failed)] = False
    pts[list(failed)] = np.nan
    idx = np.arange(n, dtype=np.int64) * 3 + 4  # frame selection kept every third frame from index 4
    df = landmark_table("S005/001", idx, idx / 30.0, np.where(ok, 0.9, 0.0), ok, pts)
    return df, pts


@pytest.mark.parametrize("n", [0, 1, 7])
def test_arrow_table_equals_pyarrows_own_conversion(n: int) -> None:
    """The buffer-built table (no pandas import) is the one ``pa.table`` makes of the same columns: types, NaN
    landmarks, non-ASCII ids, strided column views, bools, empty tables."""
    import pyarrow as pa

    rng = np.random.default_rng(n)
    pts = (rng.random((n, 68, 2)) * 300).astype(np.float32)
    ok = np.arange(n) % 3 != 1
    ids = np.array([f"S{i:03d}/é{i}" for i in range(n)], dtype=object)
    columns = landmark_columns(ids, np.arange(n) * 2, np.arange(n) / 30.0, np.where(ok, 0.8, 0.0), ok, pts)
    columns["flag"] = ok
    ours = arrow_table(columns)
    # pa.table types an empty object column as null: the reference names the id column's type
    theirs = pa.table({k: pa.array(v, type=pa.string()) if v.dtype == object else v for k, v in columns.items()})
    assert ours.schema == theirs.schema
    pd.testing.assert_frame_equal(ours.to_pandas(), theirs.to_pandas())  # NaN landmarks compare equal
    assert ours.column("x_3").to_numpy().tobytes() == columns["x_3"].tobytes()


def _openface_csv(path, rows: list[tuple[int, float, float, int, np.ndarray]], face_ids=None) -> None:
    """Write a CSV the way OpenFace 2 does: ', ' separators, padded header, zeros for failed landmarks."""
    head = ["frame"] + (["face_id"] if face_ids is not None else []) + ["timestamp", "confidence", "success"]
    head += ["gaze_0_x", "pose_Tx"] + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    head += [f"X_{i}" for i in range(2)] + ["AU01_r"]
    lines = [", ".join(head)]
    for k, (frame, ts, conf, ok, pts) in enumerate(rows):
        vals = [str(frame)] + ([str(face_ids[k])] if face_ids is not None else [])
        vals += [f"{ts:.3f}", f"{conf:.6f}", str(ok), "0.1", "12.5"]
        vals += [f"{v:.3f}" for v in pts[:, 0]] + [f"{v:.3f}" for v in pts[:, 1]] + ["1.0", "2.0", "0.5"]
        lines.append(", ".join(vals))
    path.write_text("\n".join(lines) + "\n")


def test_columns_and_order():
    df, _ = _table()
    assert list(df.columns) == COLUMNS
    assert [c for c in df.columns if c in OPENFACE_SHARED] == OPENFACE_SHARED
    assert df.columns[-2:].tolist() == ["sequence_id", "source_index"]


def test_bases_and_values():
    df, pts = _table()
    assert df["source_index"].tolist() == [4, 7, 10, 13, 16]
    assert df["frame"].tolist() == [5, 8, 11, 14, 17]  # 1-based, as OpenFace
    assert df["success"].tolist() == [1, 1, 0, 1, 1] and df["success"].dtype == np.int64
    np.testing.assert_allclose(df["timestamp"], np.array([4, 7, 10, 13, 16]) / 30.0)
    assert (df["sequence_id"] == "S005/001").all()
    np.testing.assert_array_equal(df["x_36"].to_numpy(), pts[:, 36, 0])
    np.testing.assert_array_equal(df["y_67"].to_numpy(), pts[:, 67, 1])
    np.testing.assert_array_equal(table_points(df), pts)


def test_failed_frames_have_nan_landmarks_even_if_given_points():
    pts = np.ones((3, 68, 2), dtype=np.float32)
    ok = np.array([True, False, True])
    df = landmark_table("s", np.arange(3), np.zeros(3), np.ones(3), ok, pts)
    row = df.iloc[1]
    assert row["success"] == 0 and row[[f"x_{i}" for i in range(68)]].isna().all()
    assert df.iloc[0][[f"y_{i}" for i in range(68)]].notna().all()


def test_empty_sequence_gives_an_empty_table():
    df = landmark_table("s", np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros((0, 68, 2)))
    assert len(df) == 0 and list(df.columns) == COLUMNS


def test_mismatched_lengths_raise():
    with pytest.raises(StageError, match="expected"):
        landmark_table("s", np.arange(3), np.zeros(3), np.ones(3), np.ones(3, bool), np.zeros((2, 68, 2)))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip(tmp_path, fmt):
    df, _ = _table()
    path = tmp_path / "tables" / "S005" / "001.parquet"  # sequence ids with '/' make subfolders
    write_landmark_table(df, path, csv=(fmt == "csv"))
    assert path.is_file() and path.with_suffix(".csv").is_file() == (fmt == "csv")
    back = read_landmark_table(path if fmt == "parquet" else path.with_suffix(".csv"))
    pd.testing.assert_frame_equal(back, df, check_dtype=True, check_column_type=False)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_overwrite_is_atomic_and_complete(tmp_path):
    path = tmp_path / "t.parquet"
    write_landmark_table(_table(5)[0], path)
    write_landmark_table(_table(3, failed=())[0], path)
    assert len(read_landmark_table(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_read_openface_style_csv(tmp_path):
    rng = np.random.default_rng(1)
    good = (rng.random((68, 2)) * 200).astype(np.float32)
    rows = [(1, 0.0, 0.98, 1, good), (2, 0.04, 0.0, 0, np.zeros((68, 2))), (3, 0.08, 0.97, 1, good + 1)]
    path = tmp_path / "clip.csv"
    _openface_csv(path, rows)
    df = read_openface_csv(path)
    assert list(df.columns) == COLUMNS
    assert df["frame"].tolist() == [1, 2, 3] and df["source_index"].tolist() == [0, 1, 2]
    assert df["success"].tolist() == [1, 0, 1] and (df["sequence_id"] == "clip").all()
    assert np.isnan(table_points(df)[1]).all()  # OpenFace's zeros -> NaN
    np.testing.assert_allclose(table_points(df)[2], good + 1, atol=1e-3)
    extra = read_openface_csv(path, keep_extra=True)
    assert list(extra.columns[: len(COLUMNS)]) == COLUMNS and "AU01_r" in extra.columns
    # our own table and OpenFace's merge into one frame with the same dtypes
    ours = landmark_table("clip", np.arange(3), df["timestamp"], df["confidence"], df["success"] == 1, table_points(df))
    pd.testing.assert_frame_equal(ours, df)


def test_read_openface_csv_with_face_ids(tmp_path):
    pts = np.ones((68, 2), dtype=np.float32)
    path = tmp_path / "multi.csv"
    _openface_csv(path, [(1, 0.0, 0.9, 1, pts), (1, 0.0, 0.9, 1, pts * 2), (2, 0.1, 0.9, 1, pts)], face_ids=[0, 1, 0])
    with pytest.raises(StageError, match="face_id"):
        read_openface_csv(path)
    df = read_openface_csv(path, face_id=1)
    assert len(df) == 1 and df["x_0"].iloc[0] == 2.0
    with pytest.raises(StageError, match="no face_id 7"):
        read_openface_csv(path, face_id=7)
    single = tmp_path / "single.csv"
    _openface_csv(single, [(1, 0.0, 0.9, 1, pts)], face_ids=[0])
    assert len(read_openface_csv(single)) == 1


def test_read_openface_csv_rejects_other_files(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a, b\n1, 2\n")
    with pytest.raises(StageError, match="other.csv"):
        read_openface_csv(path)
    with pytest.raises(StageError, match="missing.csv"):
        read_openface_csv(tmp_path / "missing.csv")


@pytest.mark.shared
def test_real_openface_csv(shared_dir):
    path = shared_dir / "media" / "OpenFace_Test.csv"
    header = [c.strip() for c in path.read_text().splitlines()[0].split(",")]
    # our column names and relative order are OpenFace's for the shared subset
    assert [c for c in header if c in COLUMNS] == OPENFACE_SHARED
    assert [c for c in COLUMNS if c in header] == OPENFACE_SHARED
    df = read_openface_csv(path)
    raw = pd.read_csv(path, skipinitialspace=True)
    assert list(df.columns) == COLUMNS and len(df) == len(raw)
    assert df["frame"].iloc[0] == 1 and (df["source_index"] == df["frame"] - 1).all()
    np.testing.assert_allclose(df["x_36"], raw["x_36"], atol=1e-3)
    np.testing.assert_allclose(df["y_45"], raw["y_45"], atol=1e-3)
    pts = table_points(df)
    assert pts.shape == (len(raw), 68, 2) and np.isfinite(pts[df["success"] == 1]).all()
    assert (pts[:, 45, 0] > pts[:, 36, 0]).all()  # iBUG order: 45 (left eye) right of 36 in the image
