"""Scanners on tiny fake trees with the real releases' quirks; manifest round-trip through Parquet and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fixtures_datasets import (
    CKPLUS_TREE_LABELS,
    make_ckplus_tree,
    make_oulu_tree,
    write_image,
    write_text,
    write_video,
)

from data_manifests.errors import ManifestError
from data_manifests.scan import SCANNERS, build_manifest, scan
from data_manifests.schema import CKPLUS_CODES, CLASS_SETS, COLUMNS, read_manifest, write_manifest


@pytest.fixture(scope="module")
def ck_root(tmp_path_factory) -> Path:
    return make_ckplus_tree(tmp_path_factory.mktemp("ck"))


def _none(v):
    """Missing scalars (None, NaN of pandas' str dtype, pd.NA) as None; lists unchanged."""
    return None if not isinstance(v, list) and pd.isna(v) else v


def _by_id(df: pd.DataFrame) -> dict[str, dict]:
    return {r["sequence_id"]: {k: _none(v) for k, v in r.items()} for r in df.to_dict("records")}


# ----------------------------------------------------------------------------------------------------- CK+


@pytest.mark.parametrize("classes", ["ckplus7", "basic6", "ckplus8"])
def test_ckplus_labels_follow_codes_and_class_set(ck_root, classes):
    df, report = scan(ck_root, "ckplus", classes=classes)
    rows = _by_id(df)
    assert list(df.columns) == COLUMNS
    assert set(rows) == set(CKPLUS_TREE_LABELS)
    assert list(df["sequence_id"]) == sorted(rows)
    for sid, code in CKPLUS_TREE_LABELS.items():
        r = rows[sid]
        assert r["subject"] == sid.split("_")[0]
        assert r["dataset"] == "ckplus" and r["source_type"] == "frames" and r["fold"] is None
        if code is not None and CKPLUS_CODES[code] in CLASS_SETS[classes]:
            assert r["labelled"] and r["label"] == CKPLUS_CODES[code] and r["label_note"] is None
        else:
            assert not r["labelled"] and r["label"] is None and r["label_note"]
    assert rows["S010_003"]["label_note"] == "no emotion file"
    for sid in ("S011_001", "S011_002", "S011_003"):
        assert rows[sid]["label_note"].startswith("unreadable label file")
    assert "not a number" in rows["S011_001"]["label_note"]
    assert "out of range" in rows["S011_003"]["label_note"]
    if classes == "basic6":
        assert rows["S014_001"]["label_note"] == "class contempt not in class set basic6"
    bad_label_files = {Path(p).name for p, why in report.skipped if why.startswith("unreadable label file")}
    assert bad_label_files == {f"S011_00{k}_00000004_emotion.txt" for k in (1, 2, 3)}


def test_ckplus_frames_sorted_numerically_absolute_and_peak(ck_root):
    df, report = scan(ck_root, "ckplus")
    rows = _by_id(df)
    frames = rows["S010_002"]["frame_paths"]
    assert [Path(p).name for p in frames] == [f"S010_002_{n}.png" for n in range(1, 13)]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frames)
    assert rows["S010_002"]["n_frames"] == 12 and rows["S010_002"]["peak_index"] == 11
    assert [Path(p).name for p in rows["S005_001"]["frame_paths"]] == [f"S005_001_{n:08d}.png" for n in range(1, 6)]
    assert rows["S022_001"]["peak_index"] == 2  # the emotion file names frame 3 of 4
    assert rows["S014_001"]["n_frames"] == 5 and rows["S014_001"]["peak_index"] == 4
    gap_notes = [(Path(p).name, m) for p, m in report.notes if m.startswith("missing frames")]
    assert gap_notes == [("001", "missing frames: 4..5 (sequence kept with the frames it has)")]


def test_ckplus_landmark_paths(ck_root, tmp_path):
    rows = _by_id(scan(ck_root, "ckplus")[0])
    assert all(Path(p).is_file() for p in rows["S005_001"]["landmark_paths"])
    lms = rows["S010_002"]["landmark_paths"]
    assert len(lms) == 12 and all(lms[:6]) and lms[6:] == [""] * 6
    assert Path(lms[0]).name == "S010_002_1_landmarks.txt"
    assert rows["S011_001"]["landmark_paths"] == [""] * 4
    bare = make_ckplus_tree(tmp_path / "bare", landmarks=False)
    assert scan(bare, "ckplus")[0]["landmark_paths"].isna().all()


def test_ckplus_stray_files_and_empty_folders_reported(ck_root):
    df, report = scan(ck_root, "ckplus")
    skipped = {(Path(p).name, why.split(":")[0]) for p, why in report.skipped}
    for name in (".DS_Store", "._S005_001_00000001.png", "Thumbs.db"):
        assert (name, "system file") in skipped
    assert ("README.txt", "not an image file") in skipped
    assert ("002", "empty sequence folder") in skipped
    assert ("001", "label without images") in skipped
    assert not any("._" in p or p.endswith(".txt") for paths in df["frame_paths"] for p in paths)
    text = report.summary(df)
    for needle in (
        "9 sequences from 5 subjects",
        "labelled: 5 sequences",
        "system file: 4",
        "no emotion file: 1",
    ):
        assert needle in text


@pytest.mark.parametrize(
    "images_dir, emotion_dir",
    [("CK+", "CK+"), ("extended-cohn-kanade-images", "Emotion_labels")],
    ids=["one-extra-folder", "one-folder-per-zip"],
)
def test_ckplus_tree_one_level_down(ck_root, tmp_path, images_dir, emotion_dir):
    nested = make_ckplus_tree(tmp_path, images_dir=images_dir, emotion_dir=emotion_dir)
    df, report = scan(nested, "ckplus")
    flat = scan(ck_root, "ckplus")[0]
    pd.testing.assert_frame_equal(
        df[["sequence_id", "label", "n_frames", "peak_index"]],
        flat[["sequence_id", "label", "n_frames", "peak_index"]],
    )
    layout = [Path(p).relative_to(tmp_path).as_posix() for p, m in report.notes if m.startswith("layout")]
    assert f"{images_dir}/cohn-kanade-images" in layout and f"{emotion_dir}/Emotion" in layout


@pytest.mark.parametrize("neutral_frames", [1, 2])
def test_ckplus_include_neutral_rows(ck_root, neutral_frames):
    base = _by_id(scan(ck_root, "ckplus", classes="ckplus8")[0])
    df, _ = scan(ck_root, "ckplus", classes="ckplus8", include_neutral=True, neutral_frames=neutral_frames)
    rows = _by_id(df)
    labelled = [sid for sid, r in base.items() if r["labelled"]]
    assert set(rows) == set(base) | {sid + "_neutral" for sid in labelled}
    for sid in labelled:
        n = rows[sid + "_neutral"]
        assert n["label"] == "neutral" and n["labelled"] and n["subject"] == base[sid]["subject"]
        assert n["frame_paths"] == base[sid]["frame_paths"][:neutral_frames]
        assert n["landmark_paths"] == base[sid]["landmark_paths"][:neutral_frames]
        assert n["n_frames"] == neutral_frames and n["peak_index"] == 0
        assert rows[sid] == base[sid]
    assert list(df["sequence_id"]) == sorted(rows)


def test_include_neutral_needs_neutral_class(ck_root):
    with pytest.raises(ManifestError, match="neutral.*ckplus8"):
        scan(ck_root, "ckplus", classes="ckplus7", include_neutral=True)


# ---------------------------------------------------------------------------------------------- Oulu-CASIA


@pytest.fixture(scope="module")
def oulu_root(tmp_path_factory) -> Path:
    root = make_oulu_tree(tmp_path_factory.mktemp("oulu"))
    subj = root / "OriginalImg" / "VL" / "Strong" / "P001"
    for n in range(3):
        write_image(subj / "Neutral" / f"{n:03d}.jpeg")
    write_text(subj / ".DS_Store", b"\x00")
    write_text(subj / "notes.txt", "x")
    return root


def test_oulu_default_vl_strong(oulu_root):
    df, report = scan(oulu_root, "oulu")
    assert len(df) == 2 * 6
    rows = _by_id(df)
    r = rows["VL_Strong_P001_Happiness"]
    assert r["label"] == "happy" and r["subject"] == "P001" and r["condition"] == "VL/Strong"
    assert [Path(p).name for p in r["frame_paths"]] == ["000.jpeg", "001.jpeg", "002.jpeg"]
    assert r["n_frames"] == 3 and r["peak_index"] == 2 and r["source_type"] == "frames"
    assert r["landmark_paths"] is None
    assert set(df["label"]) == {"anger", "disgust", "fear", "happy", "sadness", "surprise"}
    assert df["labelled"].all() and (df["dataset"] == "oulu").all()
    skipped = {(Path(p).name, why) for p, why in report.skipped}
    assert ("Neutral", "unknown class folder") in skipped
    assert (".DS_Store", "system file") in skipped and ("notes.txt", "stray file") in skipped


@pytest.mark.parametrize(
    "system, illumination, n_rows, conditions",
    [
        ("NI", "all", 2 * 6 * 3, {"NI/Strong", "NI/Weak", "NI/Dark"}),
        ("all", "weak", 2 * 6 * 2, {"VL/Weak", "NI/Weak"}),
        ("all", "all", 2 * 6 * 6, {f"{s}/{i}" for s in ("VL", "NI") for i in ("Strong", "Weak", "Dark")}),
    ],
)
def test_oulu_system_and_illumination_selection(oulu_root, system, illumination, n_rows, conditions):
    df, _ = scan(oulu_root, "oulu", oulu_system=system, oulu_illumination=illumination)
    assert len(df) == n_rows and set(df["condition"]) == conditions
    assert df["sequence_id"].is_unique
    assert all(
        sid.startswith(c.replace("/", "_") + "_") for sid, c in zip(df["sequence_id"], df["condition"], strict=True)
    )


def test_oulu_bad_selection(oulu_root):
    with pytest.raises(ManifestError, match="unknown Oulu-CASIA system 'IR'"):
        scan(oulu_root, "oulu", oulu_system="IR")


def test_oulu_videos_in_place_of_frames(tmp_path):
    make_oulu_tree(tmp_path, tree="OriginalVideo", videos=True, systems=("VL",), illuminations=("Strong",))
    write_video(tmp_path / "OriginalVideo" / "VL" / "Strong" / "P002" / "Smile.avi")
    df, report = scan(tmp_path, "oulu")
    assert len(df) == 12 and (df["source_type"] == "video").all()
    r = _by_id(df)["VL_Strong_P002_Anger"]
    assert Path(r["video_path"]).is_file() and r["video_path"].endswith("P002/Anger.avi")
    assert r["n_frames"] == 0 and r["frame_paths"] == [] and r["peak_index"] is None and r["label"] == "anger"
    assert any(Path(p).name == "Smile.avi" and why == "unknown class video" for p, why in report.skipped)
    assert "frame counts unknown until decoded" in report.summary(df)


def test_oulu_frames_tree_preferred_and_case_insensitive(tmp_path):
    make_oulu_tree(tmp_path, tree="OriginalVideo", videos=True, systems=("VL",), illuminations=("Strong",))
    make_oulu_tree(tmp_path, systems=("vl",), illuminations=("strong",), classes=("anger", "HAPPINESS"))
    df, report = scan(tmp_path, "oulu")
    assert (df["source_type"] == "frames").all()
    assert set(df["sequence_id"]) == {f"VL_Strong_P00{k}_{c}" for k in (1, 2) for c in ("Anger", "Happiness")}
    assert any(Path(p).name == "OriginalVideo" and m.startswith("layout") for p, m in report.notes)


def test_oulu_root_is_the_tree_or_two_levels_above(oulu_root, tmp_path):
    assert len(scan(oulu_root / "OriginalImg", "oulu")[0]) == 12
    make_oulu_tree(tmp_path / "Oulu-CASIA", subjects=("P005",), systems=("VL",), illuminations=("Strong",))
    df, report = scan(tmp_path, "oulu")
    assert list(df["subject"].unique()) == ["P005"] and len(df) == 6
    assert [Path(p).relative_to(tmp_path).as_posix() for p, m in report.notes] == ["Oulu-CASIA/OriginalImg"]


def test_oulu_classes_outside_set(oulu_root):
    df, _ = scan(oulu_root, "oulu", classes=["anger", "happy"])
    lab = df[df["labelled"]]
    assert set(lab["label"]) == {"anger", "happy"} and len(lab) == 4
    notes = set(df.loc[~df["labelled"], "label_note"])
    assert notes == {f"class {c} not in class set anger,happy" for c in ("disgust", "fear", "sadness", "surprise")}


# ------------------------------------------------------------------------------------------------- folder


@pytest.fixture()
def media_root(tmp_path) -> Path:
    root = tmp_path / "media"
    write_video(root / "alice" / "clip1.mp4")
    write_video(root / "bob" / "clip2.avi")
    for n in (1, 2, 10):
        write_image(root / "carol" / "seq" / f"f{n}.png")
    write_video(root / "dave.mov")
    write_text(root / ".DS_Store", b"\x00")
    return root


def test_folder_with_labels_csv(media_root, tmp_path):
    csv = write_text(
        media_root / "labels.csv",
        " path , Subject ,label \n"
        " alice/clip1.mp4 , alice , HAPPY \n"
        f"{media_root / 'carol' / 'seq'},carol,surprise\n"
        "bob/clip2.avi,bob,\n"
        "gone.mp4,eve,anger\n"
        "dave.mov,dave,grumpy\n",
    )
    df, report = scan(media_root, "folder", labels_csv=csv)
    rows = _by_id(df)
    assert set(rows) == {"alice__clip1", "carol__seq", "bob__clip2", "dave"}
    assert rows["alice__clip1"]["label"] == "happy" and rows["alice__clip1"]["subject"] == "alice"
    assert rows["alice__clip1"]["source_type"] == "video" and rows["alice__clip1"]["n_frames"] == 0
    carol = rows["carol__seq"]
    assert carol["label"] == "surprise" and [Path(p).name for p in carol["frame_paths"]] == [
        "f1.png",
        "f2.png",
        "f10.png",
    ]
    assert carol["peak_index"] == 2
    assert rows["bob__clip2"]["label_note"] == "empty label in labels CSV"
    assert rows["dave"]["label_note"] == "unknown label: 'grumpy'"
    skipped = dict((why.split(":")[0], p) for p, why in report.skipped)
    assert skipped["bad labels CSV row"].endswith("gone.mp4")
    assert skipped["unreadable label"].endswith("labels.csv:6")
    assert "labels.csv" not in " ".join(p for p, _ in report.skipped if "ignored file" in _)


def test_folder_files_not_in_csv_and_csv_elsewhere(media_root, tmp_path):
    csv = write_text(tmp_path / "meta" / "labels.csv", "path,subject,label\n../media/bob/clip2.avi,bob,Sadness\n")
    df, report = scan(media_root, "folder", labels_csv=csv, classes="basic6")
    rows = _by_id(df)
    assert rows["bob__clip2"]["label"] == "sadness"
    others = [sid for sid in rows if sid != "bob__clip2"]
    assert sorted(others) == ["alice__clip1", "carol__seq", "dave"]
    for sid in others:
        assert not rows[sid]["labelled"] and rows[sid]["label_note"] == "not in labels CSV"
    assert rows["alice__clip1"]["subject"] == "clip1" and rows["carol__seq"]["subject"] == "seq"
    assert sum(m.startswith("not in labels CSV") for _, m in report.notes) == 3


def test_folder_without_csv(media_root):
    df, report = scan(media_root, "folder", dataset_name="demo")
    assert not df["labelled"].any() and set(df["label_note"]) == {"no labels CSV"}
    assert (df["dataset"] == "demo").all()
    assert dict(zip(df["sequence_id"], df["subject"], strict=True)) == {
        "alice__clip1": "clip1",
        "bob__clip2": "clip2",
        "carol__seq": "seq",
        "dave": "dave",
    }
    assert all(Path(p).is_absolute() for p in df["video_path"].dropna())


def test_folder_bad_csv(media_root):
    csv = write_text(media_root / "bad.csv", "file,label\nx.mp4,happy\n")
    with pytest.raises(ManifestError, match=r"bad\.csv: labels CSV needs a 'path' column"):
        scan(media_root, "folder", labels_csv=csv)


# ---------------------------------------------------------------------------------------- errors, registry


def test_registry_and_unknown_format(tmp_path):
    assert set(SCANNERS) == {"ckplus", "oulu", "folder", "imagefolder", "fer2013", "jaffe", "kdef"}
    with pytest.raises(ManifestError, match="unknown dataset format 'affectnet'.*ckplus, oulu, folder, imagefolder"):
        scan(tmp_path, "affectnet")


@pytest.mark.parametrize(
    "fmt, message",
    [
        ("ckplus", "no CK\\+ layout found \\(expected cohn-kanade-images/ and Emotion/"),
        ("oulu", "no Oulu-CASIA layout found"),
        ("folder", "no videos .* or frame folders found"),
        ("imagefolder", "not a class-folder dataset"),
    ],
)
def test_root_without_layout(tmp_path, fmt, message):
    write_text(tmp_path / "readme.md", "hello")
    with pytest.raises(ManifestError, match=message) as err:
        scan(tmp_path, fmt)
    assert str(tmp_path) in str(err.value)


def test_missing_root(tmp_path):
    with pytest.raises(ManifestError, match="nowhere: dataset root not found"):
        scan(tmp_path / "nowhere", "ckplus")


def test_labels_csv_only_for_folder(ck_root, tmp_path):
    with pytest.raises(ManifestError, match="only read by --format folder"):
        scan(ck_root, "ckplus", labels_csv=tmp_path / "x.csv")


# ------------------------------------------------------------------------------------------- round trip


def _ck_manifest(ck_root, tmp_path):
    return build_manifest(ck_root, "ckplus", n_folds=2, classes="ckplus8", include_neutral=True)


def _oulu_videos(tmp_path):
    root = make_oulu_tree(tmp_path / "o", tree="OriginalVideo", videos=True, systems=("VL",), illuminations=("Strong",))
    return build_manifest(root, "oulu", n_folds=2, classes="basic6")


def _folder_unlabelled(tmp_path):
    write_video(tmp_path / "m" / "a.mp4")
    write_image(tmp_path / "m" / "s" / "1.png")
    return build_manifest(tmp_path / "m", "folder")


@pytest.mark.parametrize("make", [_ck_manifest, _oulu_videos, _folder_unlabelled], ids=["ckplus", "oulu", "folder"])
def test_round_trip_parquet_and_csv(ck_root, tmp_path, make):
    df, meta, _ = make(ck_root, tmp_path) if make is _ck_manifest else make(tmp_path)
    path = write_manifest(df, tmp_path / "out" / "manifest.parquet", meta, csv=True)
    back, meta2 = read_manifest(path)
    pd.testing.assert_frame_equal(back, df)
    assert meta2 == meta
    csv = pd.read_csv(path.with_suffix(".csv"), keep_default_na=False)
    assert list(csv.columns) == COLUMNS and list(csv["sequence_id"]) == list(df["sequence_id"])
    assert [json.loads(v) for v in csv["frame_paths"]] == list(df["frame_paths"])
    assert [json.loads(v) if v else None for v in csv["landmark_paths"]] == [
        v if isinstance(v, list) else None for v in df["landmark_paths"]
    ]
    assert [int(v) if v != "" else None for v in csv["fold"]] == [None if pd.isna(v) else int(v) for v in df["fold"]]


def test_neutral_rows_for_oulu_frames_not_videos(tmp_path):
    make_oulu_tree(tmp_path / "img", systems=("VL",), illuminations=("Strong",), subjects=("P001",))
    make_oulu_tree(tmp_path / "vid", tree="OriginalVideo", videos=True, systems=("VL",), illuminations=("Strong",))
    frames, _ = scan(tmp_path / "img", "oulu", classes="ckplus8", include_neutral=True, neutral_frames=2)
    assert (frames["label"] == "neutral").sum() == 6
    assert set(frames.loc[frames["label"] == "neutral", "condition"]) == {"VL/Strong"}
    videos, report = scan(tmp_path / "vid", "oulu", classes="ckplus8", include_neutral=True)
    assert len(videos) == 12 and not (videos["label"] == "neutral").any()
    assert sum(why.startswith("no neutral row") for _, why in report.skipped) == 12


def test_folder_images_beside_videos_are_stills(tmp_path):
    write_video(tmp_path / "talk.mp4")
    write_image(tmp_path / "face_a.jpg")
    write_image(tmp_path / "face_b.png")
    for n in range(3):
        write_image(tmp_path / "clip" / f"{n:04d}.png")
    df, report = scan(tmp_path, "folder")
    rows = _by_id(df)
    assert set(rows) == {"talk", "face_a", "face_b", "clip"}
    assert rows["face_a"]["n_frames"] == 1 and rows["face_a"]["frame_paths"][0].endswith("face_a.jpg")
    assert rows["clip"]["n_frames"] == 3
    assert any(m.startswith("images beside videos") for _, m in report.notes)


def test_folder_same_stem_different_extensions(tmp_path):
    write_video(tmp_path / "single_face.mp4")
    write_image(tmp_path / "single_face.jpg")
    for n in range(2):
        write_image(tmp_path / "single_face" / f"{n}.png")
    df, _ = scan(tmp_path, "folder")
    assert sorted(df["sequence_id"]) == ["single_face", "single_face.jpg", "single_face.mp4"]


@pytest.mark.shared
def test_folder_on_real_media(shared_dir):
    df, meta, report = build_manifest(shared_dir / "media", "folder")
    videos = df[df["source_type"] == "video"]
    assert len(videos) >= 1 and (videos["n_frames"] == 0).all() and videos["frame_paths"].map(len).eq(0).all()
    assert df["sequence_id"].is_unique and not df["labelled"].any() and meta.fold_source == "none"
    assert all(Path(p).is_file() for p in videos["video_path"])
    assert "sequences from" in report.summary(df)
