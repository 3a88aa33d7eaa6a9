"""FER2013 (CSV and folder export), JAFFE and KDEF as they ship: rows, labels, subjects, splits, report rows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_datasets import (
    FER_CLASS_FOLDERS,
    FER_CSV_ROWS,
    JAFFE_CODES,
    JAFFE_SUBJECTS,
    KDEF_CODES,
    KDEF_PERSONS,
    fer_pixels,
    make_fer_csv,
    make_fer_folders,
    make_jaffe_folder,
    make_kdef_tree,
    write_image,
    write_text,
)

from data_manifests.errors import ManifestError
from data_manifests.scan import build_manifest, scan
from data_manifests.schema import COLUMNS, read_manifest, write_manifest

FER_LABELS = ["anger", "disgust", "fear", "happy", "sadness", "surprise", "neutral"]


def _reasons(report) -> dict[str, str]:
    return {Path(p).name: r for p, r in report.skipped}


# ----------------------------------------------------------------------------------------------- FER2013 CSV


def test_fer_csv_rows_become_pngs_once(tmp_path):
    csv = make_fer_csv(tmp_path / "data" / "fer2013.csv")
    df, meta, report = build_manifest(csv, "fer2013", classes="basic7")
    assert list(df.columns) == COLUMNS
    assert list(df["sequence_id"]) == [f"{u}_{n}" for n, (_, u) in enumerate(FER_CSV_ROWS)]
    assert list(df["subject"]) == list(df["sequence_id"])
    assert list(df["label"]) == [FER_LABELS[int(c)] for c, _ in FER_CSV_ROWS]
    assert list(df["split"]) == ["train"] * 3 + ["val"] * 2 + ["test"] * 2
    assert df["fold"].isna().all() and (df["n_frames"] == 1).all() and (df["peak_index"] == 0).all()
    assert meta.fold_source == "split" and meta.n_folds == 0
    images = tmp_path / "data" / "fer2013_images"
    first = Path(df["frame_paths"][0][0])
    assert first.parent == images / "Training" and first.name.startswith("Training_0_") and first.suffix == ".png"
    img = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    expected = np.array(fer_pixels(0).split(), dtype=np.uint8).reshape(48, 48)
    assert img.shape == (48, 48) and np.array_equal(img, expected)
    assert any("7 written, 0 already there" in m for _, m in report.notes)
    # A second scan writes nothing and gives the same manifest.
    stamps = {p: os.stat(p).st_mtime_ns for p in df["frame_paths"].str[0]}
    again, _, report2 = build_manifest(csv, "fer2013", classes="basic7")
    pd.testing.assert_frame_equal(again, df)
    assert {p: os.stat(p).st_mtime_ns for p in again["frame_paths"].str[0]} == stamps
    assert any("0 written, 7 already there" in m for _, m in report2.notes)


def test_fer_csv_resumes_and_a_changed_row_gets_a_new_file(tmp_path):
    csv = make_fer_csv(tmp_path / "fer2013.csv")
    df, _ = scan(tmp_path, "fer2013", classes="basic7", fer2013_images=tmp_path / "imgs")
    assert all(p.startswith(str(tmp_path / "imgs")) for p in df["frame_paths"].str[0])
    Path(df["frame_paths"][1][0]).unlink()  # as if killed before this row
    lines = csv.read_text().splitlines()
    lines[3] = f"6,{fer_pixels(99)},Training"  # row 2's pixels change
    csv.write_text("\n".join(lines) + "\n")
    df2, report = scan(csv, "fer2013", classes="basic7", fer2013_images=tmp_path / "imgs")
    assert any("2 written, 5 already there" in m for _, m in report.notes)
    assert df2["frame_paths"][2] != df["frame_paths"][2]
    assert any("1 files there belong to no row" in m for _, m in report.notes)


def test_fer_csv_bad_rows_are_report_rows(tmp_path):
    csv = make_fer_csv(tmp_path / "fer2013.csv", bad_rows=True)
    df, report = scan(csv, "fer2013", classes="basic7")
    reasons = {p.rsplit(":", 1)[1]: r for p, r in report.skipped}
    assert reasons["9"].startswith("bad pixels: 3 values")
    assert reasons["10"].startswith("unknown Usage 'Holdout'")
    assert reasons["12"].startswith("bad pixels")
    odd = df[df["sequence_id"] == "Training_9"].iloc[0]
    assert not odd["labelled"] and odd["label_note"].startswith("unknown emotion code")
    assert len(df) == len(FER_CSV_ROWS) + 1


def test_fer_csv_classes_outside_the_set_are_unlabelled(tmp_path):
    df, report = scan(make_fer_csv(tmp_path / "fer2013.csv"), "fer2013")  # ckplus7: no neutral
    neutral = df[df["sequence_id"] == "Training_2"].iloc[0]
    assert not neutral["labelled"] and "not in class set ckplus7" in neutral["label_note"]


def test_fer_csv_refusals(tmp_path):
    write_text(tmp_path / "other.csv", "a,b\n1,2\n")
    with pytest.raises(ManifestError, match="not a FER2013 root"):
        scan(tmp_path, "fer2013")
    with pytest.raises(ManifestError, match="not a FER2013 CSV"):
        scan(tmp_path / "other.csv", "fer2013")
    csv = make_fer_csv(tmp_path / "ro" / "fer2013.csv")
    with pytest.raises(ManifestError, match="fold file"):
        build_manifest(csv, "fer2013", classes="basic7", fold_file=tmp_path / "folds.csv")
    blocker = write_text(tmp_path / "blocker", "a file where the images folder would go")
    with pytest.raises(ManifestError, match="--fer2013-images"):
        scan(csv, "fer2013", fer2013_images=blocker / "images")


# ------------------------------------------------------------------------------------- FER2013 folder export


def test_fer_folder_export_splits_labels_and_no_folds(tmp_path, caplog):
    counts = make_fer_folders(tmp_path, splits=("Training", "PublicTest", "test"))
    write_text(tmp_path / "README.txt", "x")
    write_text(tmp_path / "Training" / "angry" / "notes.txt", "x")
    write_text(tmp_path / "Training" / "angry" / ".DS_Store", "x")
    (tmp_path / "Training" / "contempt_faces").mkdir()
    df, meta, report = build_manifest(tmp_path, "fer2013", classes="basic7", n_folds=10)
    assert len(df) == sum(counts.values())
    assert df.groupby("split").size().to_dict() == {"train": 14, "val": 7, "test": 7}
    assert (df["subject"] == df["sequence_id"]).all() and df["fold"].isna().all()
    assert df["sequence_id"].str.startswith("Training_").sum() == 14
    assert set(df["label"]) == set(FER_LABELS) and df["labelled"].all()
    assert meta.fold_source == "split"
    reasons = _reasons(report)
    assert reasons["README.txt"] == "file outside a split folder"
    assert reasons["notes.txt"] == "not an image file" and reasons[".DS_Store"] == "system file"
    assert reasons["contempt_faces"].startswith("not a class folder")
    assert "fewer labelled sequences than" not in caplog.text  # no fold warnings for a split dataset
    text = report.summary(df)
    assert "per class and split:" in text and "train" in text


def test_fer_one_split_folder_as_root(tmp_path):
    make_fer_folders(tmp_path, splits=("PrivateTest",))
    df, _ = scan(tmp_path / "PrivateTest", "fer2013", classes="basic7")
    assert set(df["split"]) == {"test"} and len(df) == len(FER_CLASS_FOLDERS)
    # A folder named after no split: each file's prefix decides.
    make_fer_folders(tmp_path / "mixed", splits=("train",))
    os.rename(tmp_path / "mixed" / "train", tmp_path / "faces")
    df2, report = scan(tmp_path / "faces", "fer2013", classes="basic7")
    assert set(df2["split"]) == {"train"}
    assert any("name prefix" in m for _, m in report.notes)


def test_fer_prefix_of_another_split_is_noted(tmp_path):
    write_image(tmp_path / "test" / "happy" / "PublicTest_1.jpg")
    write_image(tmp_path / "test" / "sad" / "PrivateTest_2.jpg")
    write_image(tmp_path / "train" / "sad" / "Training_3.jpg")
    df, report = scan(tmp_path, "fer2013", classes="basic7")
    assert df.set_index("sequence_id")["split"].to_dict() == {
        "PublicTest_1": "test",
        "PrivateTest_2": "test",
        "Training_3": "train",
    }
    assert any("1 PublicTest_" in m for _, m in report.notes)


@pytest.mark.parametrize("only_split, expected", [("val", {"val": 7}), ("test", {"test": 7}), ("train", {"train": 14})])
def test_fer_only_split_leaves_the_other_split_folders_unread(tmp_path, only_split, expected):
    """``only_split`` (what `seqfer evaluate --split` passes): the other split folders are reported, not walked."""
    make_fer_folders(tmp_path, splits=("Training", "PublicTest", "test"))
    df, report = scan(tmp_path, "fer2013", classes="basic7", only_split=only_split)
    assert df.groupby("split").size().to_dict() == expected
    unread = {Path(p).name: r for p, r in report.skipped if "not read" in r}
    assert len(unread) == 2 and all(r.endswith(f"only {only_split} was asked for") for r in unread.values())


def test_fer_only_split_without_its_folder_reads_everything(tmp_path):
    """No folder of the asked split: the whole export is read, so the caller can say which splits there are."""
    make_fer_folders(tmp_path, splits=("train", "validation"))
    df, report = scan(tmp_path, "fer2013", classes="basic7", only_split="test")
    assert df.groupby("split").size().to_dict() == {"train": 14, "val": 7}
    assert not [r for _, r in report.skipped if "not read" in r]


def test_fer_manifest_round_trip_keeps_split(tmp_path):
    make_fer_folders(tmp_path / "fer")
    df, meta, _ = build_manifest(tmp_path / "fer", "fer2013", classes="basic7")
    write_manifest(df, tmp_path / "m.parquet", meta, csv=True)
    back, meta2 = read_manifest(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert meta2.fold_source == "split" and meta2.version == 2
    assert "split" in pd.read_csv(tmp_path / "m.csv").columns


def test_manifest_without_split_column_still_reads(tmp_path):
    make_jaffe_folder(tmp_path / "jaffe")
    df, meta, _ = build_manifest(tmp_path / "jaffe", "jaffe", classes="basic7", n_folds=4)
    write_manifest(df, tmp_path / "m.parquet", meta)
    old = pd.read_parquet(tmp_path / "m.parquet").drop(columns="split")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(old, preserve_index=False)
    raw = pq.read_table(tmp_path / "m.parquet").schema.metadata[b"seqfer"].replace(b'"version": 2', b'"version": 1')
    pq.write_table(table.replace_schema_metadata({b"seqfer": raw}), tmp_path / "v1.parquet")
    back, meta1 = read_manifest(tmp_path / "v1.parquet")
    assert back["split"].isna().all() and meta1.version == 1
    pd.testing.assert_frame_equal(back, df)


def test_bad_split_value_is_refused(tmp_path):
    make_jaffe_folder(tmp_path / "jaffe")
    df, _ = scan(tmp_path / "jaffe", "jaffe", classes="basic7")
    df["split"] = "validation"
    from data_manifests.schema import normalise

    with pytest.raises(ManifestError, match="split values"):
        normalise(df)


def test_missing_text_cells_of_any_kind_stay_missing(tmp_path):
    """A manifest built by a user's own code may hold its text columns in pandas' "string" dtype, whose missing
    value is ``pd.NA``: it stays missing (not the text "<NA>"), as None and NaN do."""
    from data_manifests.schema import is_missing, normalise

    make_jaffe_folder(tmp_path / "jaffe")
    df, _ = scan(tmp_path / "jaffe", "jaffe", classes="basic7")
    labels = [None, float("nan"), pd.NA] + list(df["label"][3:])
    df["label"] = pd.array(labels, dtype="string")
    out = normalise(df)
    assert out["label"][:3].isna().all() and "<NA>" not in set(out["label"].dropna())
    assert [is_missing(v) for v in (None, float("nan"), pd.NA, pd.NaT, "", 0, "x")] == [1, 1, 1, 1, 0, 0, 0]


# --------------------------------------------------------------------------------------------------- JAFFE


def test_jaffe_rows_subjects_labels_and_folds(tmp_path):
    stems = make_jaffe_folder(tmp_path)
    df, meta, report = build_manifest(tmp_path, "jaffe", classes="basic7", n_folds=4)
    assert sorted(df["sequence_id"]) == sorted(stems)
    row = df.set_index("sequence_id").loc["KA.AN1.0"]
    assert row["subject"] == "KA" and row["label"] == "anger" and row["frame_paths"][0].endswith(".tiff")
    assert set(df["subject"]) == set(JAFFE_SUBJECTS)
    assert df.groupby("label").size().to_dict() == {c: len(JAFFE_SUBJECTS) for c in FER_LABELS}
    assert df["split"].isna().all() and df["fold"].notna().all()
    assert (df.groupby("subject")["fold"].nunique() == 1).all() and df["fold"].nunique() == 4
    assert meta.fold_source == "stratified-group" and len(JAFFE_CODES) == 7


def test_jaffe_bad_names_are_report_rows(tmp_path):
    make_jaffe_folder(tmp_path)
    write_image(tmp_path / "KA.XX1.99.tiff")
    write_image(tmp_path / "photo.tiff")
    write_text(tmp_path / "README", "jaffe")
    write_image(tmp_path / "sub" / "KA.AN1.98.tiff")
    write_image(tmp_path / "KA.AN1.0.png")  # the same stem as KA.AN1.0.tiff
    df, report = scan(tmp_path, "jaffe", classes="basic7")
    reasons = _reasons(report)
    assert reasons["KA.XX1.99.tiff"].startswith("unknown expression code: 'XX'")
    assert reasons["photo.tiff"].startswith("not a JAFFE name")
    assert reasons["README"] == "not an image file"
    assert reasons["sub"].startswith("folder inside the JAFFE folder")
    assert reasons["KA.AN1.0.tiff"].startswith("duplicate") or reasons["KA.AN1.0.png"].startswith("duplicate")
    assert len(df) == len(JAFFE_SUBJECTS) * len(JAFFE_CODES)


def test_jaffe_empty_root_is_refused_with_a_hint(tmp_path):
    make_jaffe_folder(tmp_path / "jaffe")
    with pytest.raises(ManifestError, match="point ROOT at the folder of images"):
        scan(tmp_path, "jaffe")


def test_tiff_is_an_image_everywhere(tmp_path):
    from stages.preprocess.image_file import read_image

    make_jaffe_folder(tmp_path)
    df, _ = scan(tmp_path, "jaffe", classes="basic7")
    for color, shape in (("grey", (16, 16)), ("rgb", (16, 16, 3))):
        pixels = read_image(df["frame_paths"][0][0], color)
        assert pixels is not None and pixels.shape == shape


# ---------------------------------------------------------------------------------------------------- KDEF


def test_kdef_takes_only_straight_view_by_default(tmp_path):
    make_kdef_tree(tmp_path)
    df, meta, report = build_manifest(tmp_path, "kdef", classes="basic7", n_folds=2)
    assert len(df) == len(KDEF_PERSONS) * len(KDEF_CODES)
    assert set(df["condition"]) == {"S"}
    assert set(df["subject"]) == {"F01", "M02", "F03", "M04"}
    row = df.set_index("sequence_id").loc["BF01AFS"]
    assert row["subject"] == "F01" and row["label"] == "fear"
    assert (df.groupby("subject")["fold"].nunique() == 1).all()  # AF01 and BF01: one person, one fold
    n_other = len(KDEF_PERSONS) * len(KDEF_CODES)
    assert any(f"FL {n_other}, HL {n_other}, HR {n_other}, FR {n_other}" in m for _, m in report.notes)
    assert not report.skipped


@pytest.mark.parametrize("angles", ["S,HL,HR", ["hr", "S", "HL"]])
def test_kdef_angles_option(tmp_path, angles):
    make_kdef_tree(tmp_path)
    df, _ = scan(tmp_path, "kdef", classes="basic7", kdef_angles=angles)
    assert df.groupby("condition").size().to_dict() == {a: len(KDEF_PERSONS) * 7 for a in ("S", "HL", "HR")}


def test_kdef_bad_angles_are_refused(tmp_path):
    make_kdef_tree(tmp_path)
    with pytest.raises(ManifestError, match="unknown XX"):
        scan(tmp_path, "kdef", kdef_angles="S,XX")


def test_kdef_bad_names_are_report_rows(tmp_path):
    make_kdef_tree(tmp_path)
    write_image(tmp_path / "AF01" / "AF01XXS.JPG")
    write_image(tmp_path / "AF01" / "AF01ANQ.JPG")
    write_image(tmp_path / "AF01" / "AF02ANS.JPG")
    write_image(tmp_path / "AF01" / "portrait.JPG")
    write_text(tmp_path / "AF01" / "Thumbs.db", "x")
    write_image(tmp_path / "CF01" / "CF01ANS.JPG")
    write_text(tmp_path / "README.txt", "kdef")
    df, report = scan(tmp_path, "kdef", classes="basic7")
    reasons = _reasons(report)
    assert reasons["AF01XXS.JPG"].startswith("unknown expression code: 'XX'")
    assert reasons["AF01ANQ.JPG"].startswith("unknown angle: 'Q'")
    assert reasons["AF02ANS.JPG"].startswith("name does not match its folder")
    assert reasons["portrait.JPG"].startswith("not a KDEF name")
    assert reasons["Thumbs.db"] == "system file"
    assert reasons["CF01"].startswith("not a KDEF person folder")
    assert reasons["README.txt"] == "file outside a person folder"
    assert len(df) == len(KDEF_PERSONS) * len(KDEF_CODES)


def test_kdef_cli_manifest(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    make_kdef_tree(tmp_path / "kdef")
    out = tmp_path / "m.parquet"
    args = ["manifest", str(tmp_path / "kdef"), "--format", "kdef", "-o", str(out), "--classes", "basic7"]
    result = CliRunner().invoke(app, [*args, "--folds", "2", "--kdef-angles", "S,FR"])
    assert result.exit_code == 0, result.output
    df, meta = read_manifest(out)
    assert set(df["condition"]) == {"S", "FR"} and meta.extra["kdef_angles"] == "S,FR"


def test_fer_csv_cli_manifest(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    csv = make_fer_csv(tmp_path / "fer2013.csv")
    out, images = tmp_path / "m.parquet", tmp_path / "pngs"
    args = ["manifest", str(csv), "--format", "fer2013", "-o", str(out), "--fer2013-images", str(images)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "class set leaves out neutral" in result.output and "per class and split:" in result.output
    df, meta = read_manifest(out)
    assert len(df) == len(FER_CSV_ROWS) and meta.fold_source == "split"
    assert all(Path(p).is_file() and Path(p).parent.parent == images for p in df["frame_paths"].str[0])


def test_config_accepts_the_new_formats():
    from pipeline.config import load_config

    cfg = load_config(None, ["data.format=fer2013", "data.kdef_angles=S,HL", "data.fer2013_images=/tmp/x"])
    assert cfg.data.format == "fer2013" and cfg.data.kdef_angles == "S,HL"


# --------------------------------------------------------------------------------------- the real FER2013

REAL_TRAIN = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "neutral": 4965,
    "sad": 4830,
    "surprise": 3171,
}


@pytest.mark.shared
def test_real_fer2013_folder_export_counts(shared_dir):
    root = shared_dir / "real" / "FER2013"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    start = time.perf_counter()
    df, meta, _ = build_manifest(root, "fer2013", classes="basic7")
    seconds = time.perf_counter() - start
    assert df.groupby("split").size().to_dict() == {"train": 28709, "val": 3589}
    train = df[df["split"] == "train"]
    expected = {
        FER_LABELS[["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"].index(k)]: v
        for k, v in REAL_TRAIN.items()
    }
    assert train.groupby("label").size().to_dict() == expected
    assert df["fold"].isna().all() and meta.fold_source == "split" and df["sequence_id"].is_unique
    assert seconds < 20, f"scan took {seconds:.1f} s"
