"""The class-folder (ImageFolder) scanner: CK+48 names as they ship, a configurable name pattern, stray files.

Contract under test: ``ROOT/<class>/<stem>.<ext>``; the class folder is the label; subject / sequence / frame come
from the stem through the pattern's named groups; a sequence's frames are in frame-number order (numbers, not
strings); a non-matching name is reported as skipped; folds never split a subject.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_datasets import write_image, write_text

from data_manifests.errors import ManifestError
from data_manifests.scan import build_manifest, scan

SHARED_CK48 = Path(__file__).resolve().parents[2] / "shared" / "real" / "CK+48"


@pytest.fixture
def ck48_root(tmp_path: Path) -> Path:
    """A CK+48-shaped tree: 6 subjects x (happy, surprise), 3 frames each, plus strays.

    S001's happy frames are numbered 9, 10, 11 (string order would put 10 first)."""
    root = tmp_path / "CK+48"
    for s in range(1, 7):
        for cls, seq, first in (("happy", 2, 9), ("surprise", 5, 20)):
            for f in range(first, first + 3):
                write_image(root / cls / f"S{s:03d}_{seq:03d}_{f:08d}.png")
    write_text(root / "happy" / ".DS_Store", "x")
    write_text(root / "happy" / "notes.txt", "x")
    write_image(root / "happy" / "IMG_0001.png")  # does not match the CK+ pattern
    write_image(root / "stray.png")  # outside any class folder
    write_image(root / "holiday" / "S001_001_00000001.png")  # not a class
    return root


def test_ck48_sequences_subjects_and_frame_order(ck48_root: Path) -> None:
    df, report = scan(ck48_root, "imagefolder")
    assert len(df) == 12
    assert set(df["subject"]) == {f"S{s:03d}" for s in range(1, 7)}
    row = df.set_index("sequence_id").loc["S001_002"]
    assert row["label"] == "happy" and row["labelled"]
    assert [Path(p).stem[-2:] for p in row["frame_paths"]] == ["09", "10", "11"]
    assert row["peak_index"] == 2 and row["n_frames"] == 3
    assert all(Path(p).is_absolute() for p in row["frame_paths"])
    skipped = dict((Path(p).name, reason) for p, reason in report.skipped)
    assert skipped["IMG_0001.png"].startswith("name does not match the pattern")
    assert skipped[".DS_Store"] == "system file"
    assert skipped["notes.txt"] == "not an image file"
    assert skipped["stray.png"] == "file outside a class folder"
    assert skipped["holiday"].startswith("not a class folder")


def test_folds_are_subject_independent(ck48_root: Path) -> None:
    df, _, _ = build_manifest(ck48_root, "imagefolder", n_folds=3, seed=0)
    assert df.groupby("subject")["fold"].nunique().max() == 1
    assert sorted(df["fold"].unique()) == [0, 1, 2]


def test_pattern_without_sequence_makes_one_frame_sequences(tmp_path: Path) -> None:
    root = tmp_path / "jaffe"
    for name in ("KA.HA1.29", "KA.HA2.30", "KL.SU1.50"):
        write_image(root / ("happy" if ".HA" in name else "surprise") / f"{name}.tiff.png")
    df, _ = scan(root, "imagefolder", name_pattern=r"^(?P<subject>[A-Z]{2})\.")
    assert len(df) == 3
    assert (df["n_frames"] == 1).all()
    assert sorted(df["subject"]) == ["KA", "KA", "KL"]


def test_same_sequence_in_two_class_folders_gets_unique_ids(tmp_path: Path) -> None:
    root = tmp_path / "set"
    write_image(root / "happy" / "S001_001_00000001.png")
    write_image(root / "sadness" / "S001_001_00000002.png")
    df, report = scan(root, "imagefolder")
    assert sorted(df["sequence_id"]) == ["S001_001_happy", "S001_001_sadness"]
    assert any("class folders" in msg for _, msg in report.notes)


def test_class_outside_the_set_is_unlabelled(ck48_root: Path) -> None:
    df, _ = scan(ck48_root, "imagefolder", classes="anger,surprise")
    happy = df[df["sequence_id"] == "S001_002"].iloc[0]
    assert not happy["labelled"] and "not in class set" in happy["label_note"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("(?P<subject", "not a valid regular expression"), (r"^(?P<person>S\d+)", "needs a named group")],
)
def test_bad_patterns(ck48_root: Path, pattern: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        scan(ck48_root, "imagefolder", name_pattern=pattern)


def test_root_without_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    with pytest.raises(ManifestError, match="not a class-folder dataset"):
        scan(tmp_path, "imagefolder")


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_CK48.is_dir(), reason="../shared/real/CK+48 is absent")
def test_real_ck48_scans_into_three_frame_sequences() -> None:
    df, report = scan(SHARED_CK48, "imagefolder")
    assert not report.skipped
    assert (df["n_frames"] == 3).all()
    assert df["labelled"].all()
    n_images = sum(1 for p in SHARED_CK48.glob("*/*.png"))
    assert 3 * len(df) == n_images
