"""Issue "Never wrong, never silent", second pass: the cases whose fix lives in the scanners (data_manifests).

4  a link or alias (``Disgusted -> disgust``) never doubles a file: one real file counts once, the duplicate, a
   link loop and a broken link are each a row of the scan report, in every scanner that walks folders;
10 a catastrophic name pattern gives one ``error:`` line naming it, within seconds, instead of hanging;
11 a file name that is not valid UTF-8, and a pattern whose ``subject`` group is optional and unmatched, are rows
   of the scan report, never a traceback;
13 a one-class dataset is refused; a class smaller than the number of folds is warned about;
14 TIFF frames are image files (and decode); a dangling class-folder link is reported.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_datasets import make_ckplus_tree, make_oulu_tree, write_image, write_video

from data_manifests.errors import ManifestError
from data_manifests.name_pattern import NamePattern
from data_manifests.scan import build_manifest, scan
from data_manifests.schema import read_manifest, write_manifest
from pipeline.cli import main


def _one_error_line(err: str) -> str:
    """stderr holds exactly one ``error:`` message and no traceback; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    return lines[0]


def _reasons(report) -> dict[str, str]:
    """Skipped path's last part -> reason."""
    return {Path(p).name: reason for p, reason in report.skipped}


def _class_folders(root: Path, classes: dict[str, int], subjects: int = 3, frames: int = 3, ext: str = ".png"):
    """``root/<class>/S00k_00c_0000000f<ext>``: ``subjects`` subjects per class, one sequence each."""
    for cls, seq in classes.items():
        for s in range(1, subjects + 1):
            for f in range(1, frames + 1):
                write_image(root / cls / f"S{s:03d}_{seq:03d}_{f:08d}{ext}")
    return root


def _all_frames(df) -> list[str]:
    return [p for paths in df["frame_paths"] for p in paths]


def _real_files(frames: list[str]) -> set[str]:
    return {os.path.realpath(p) for p in frames}


# --- 4. links and aliases never double a file -------------------------------------------------------------------


def test_alias_class_folder_counts_each_file_once(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "set", {"disgust": 1, "happy": 2})
    (root / "Disgusted").symlink_to("disgust", target_is_directory=True)  # an alias beside the real folder
    (root / "happy" / "S001_002_00000009.png").symlink_to("S001_002_00000001.png")  # one frame linked twice
    (root / "loop").symlink_to("loop")  # a link to itself
    (root / "anger").symlink_to(tmp_path / "gone", target_is_directory=True)  # points nowhere
    (root / "disgust" / "up").symlink_to("..", target_is_directory=True)  # back to the root
    df, report = scan(root, "imagefolder")
    frames = _all_frames(df)
    assert len(frames) == len(_real_files(frames)) == 18, "every real file exactly once"
    assert (df["n_frames"] == 3).all() and len(df) == 6
    assert all("/Disgusted/" not in p for p in frames), "the first path in sorted order wins"
    why = _reasons(report)
    assert why["Disgusted"].startswith("duplicate: the same folder as ") and why["Disgusted"].endswith("counted once")
    assert why["S001_002_00000009.png"].startswith("duplicate: the same file as ")
    assert why["loop"].startswith("link loop")
    assert why["anger"].startswith("broken link") and "gone" in why["anger"]
    assert why["up"].startswith("link loop")
    text = report.summary(df)
    for group in ("duplicate", "link loop", "broken link"):
        assert group in text


def test_ckplus_alias_folders_and_linked_frames(tmp_path: Path) -> None:
    root = make_ckplus_tree(tmp_path / "ck")
    images = root / "cohn-kanade-images"
    (images / "S005" / "009").symlink_to("001", target_is_directory=True)  # an aliased sequence
    (images / "S005b").symlink_to("S005", target_is_directory=True)  # an aliased subject
    (images / "S022" / "001" / "S022_001_00000005.png").symlink_to("S022_001_00000004.png")
    (images / "S022" / "002" / "S022_002_00000005.png").symlink_to("missing.png")
    df, report = scan(root, "ckplus")
    frames = _all_frames(df)
    assert len(frames) == len(_real_files(frames))
    ids = set(df["sequence_id"])
    assert "S005_009" not in ids and not any(i.startswith("S005b") for i in ids)
    by_id = df.set_index("sequence_id")
    assert by_id.loc["S022_001", "n_frames"] == 4 and by_id.loc["S022_002", "n_frames"] == 4
    why = _reasons(report)
    assert why["009"].startswith("duplicate") and why["S005b"].startswith("duplicate")
    assert why["S022_001_00000005.png"].startswith("duplicate")
    assert why["S022_002_00000005.png"].startswith("broken link")


def test_oulu_alias_and_dangling_class_folders(tmp_path: Path) -> None:
    root = make_oulu_tree(tmp_path / "oulu", systems=("VL",), illuminations=("Strong",))
    subject = root / "OriginalImg" / "VL" / "Strong" / "P001"
    (subject / "anger").symlink_to("Anger", target_is_directory=True)
    (subject / "Fear").rename(subject / "fear_real")
    (subject / "Fear").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    df, report = scan(root, "oulu")
    frames = _all_frames(df)
    assert len(frames) == len(_real_files(frames)) and (df["n_frames"] == 3).all()
    assert "VL_Strong_P001_Fear" not in set(df["sequence_id"])
    why = _reasons(report)
    assert why["anger"].startswith("duplicate") and why["Fear"].startswith("broken link")


def test_folder_scanner_follows_links_once(tmp_path: Path) -> None:
    root = tmp_path / "media"
    write_video(root / "clips" / "a.mp4")
    write_video(root / "clips" / "b.mp4")
    for f in range(3):
        write_image(root / "frames" / "seq1" / f"{f:03d}.png")
    (root / "clips_alias").symlink_to("clips", target_is_directory=True)
    (root / "frames" / "seq2").symlink_to("seq1", target_is_directory=True)
    (root / "frames" / "seq1" / "again").symlink_to("..", target_is_directory=True)
    (root / "clips" / "c.mp4").symlink_to("gone.mp4")
    df, report = scan(root, "folder")
    assert sorted(df["sequence_id"]) == ["clips__a", "clips__b", "frames__seq1"]
    assert df.set_index("sequence_id").loc["frames__seq1", "n_frames"] == 3
    why = _reasons(report)
    assert why["clips_alias"].startswith("duplicate") and why["seq2"].startswith("duplicate")
    assert why["again"].startswith("link loop") and why["c.mp4"].startswith("broken link")


def test_folder_csv_through_a_link_is_not_counted_twice(tmp_path: Path) -> None:
    outside = tmp_path / "store"
    write_video(outside / "a.mp4")
    write_video(outside / "b.mp4")
    root = tmp_path / "media"
    root.mkdir()
    (root / "videos").symlink_to(outside, target_is_directory=True)
    csv = root / "labels.csv"
    csv.write_text("path,subject,label\nvideos/a.mp4,P1,happy\nvideos/b.mp4,P2,anger\n")
    df, _ = scan(root, "folder", labels_csv=csv)
    assert len(df) == 2 and df["labelled"].all()


# --- 10. a catastrophic pattern answers at once -----------------------------------------------------------------

CATASTROPHIC = r"^(?P<subject>(a|aa)+)+$"


@pytest.mark.parametrize("pattern", [CATASTROPHIC, r"^(?P<subject>(a|S|\d)+)+_"])
def test_catastrophic_pattern_answers_within_seconds(tmp_path: Path, capsys, pattern: str) -> None:
    root = tmp_path / "set"
    for cls in ("happy", "surprise"):
        for k in range(3):
            write_image(root / cls / f"{'a' * 40}{k}!.png")
            write_image(root / cls / f"S{'0' * 40}{k}x.png")
    start = time.monotonic()
    out = tmp_path / "m.parquet"
    code = main(
        ["manifest", str(root), "--format", "imagefolder", "--pattern", pattern, "-o", str(out), "--folds", "2"]
    )
    assert time.monotonic() - start < 30
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert pattern in line
    if pattern == CATASTROPHIC:
        assert "takes more than 1 s to match" in line


def test_pattern_total_time_budget() -> None:
    rx = NamePattern(CATASTROPHIC, match_timeout_s=1.0, total_timeout_s=0.2)
    with pytest.raises(ManifestError, match="in all") as exc:
        for _ in range(100):
            rx.fields("a" * 40 + "!")
    assert CATASTROPHIC in str(exc.value)


def test_patterns_keep_their_meaning() -> None:
    rx = NamePattern(r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)$")
    assert rx.fields("S010_004_00000017") == ({"subject": "S010", "sequence": "004", "frame": "00000017"}, None)
    for bad in ("(?P<subject", r"^(?P<person>S\d+)", r"^(?P<subject>S\d+)(?P<take>\d)"):
        with pytest.raises(ManifestError, match="imagefolder name pattern"):
            NamePattern(bad)


# --- 11. names that are not UTF-8, optional subject groups ------------------------------------------------------


def _write_bytes_name(folder: Path, name: bytes) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(folder), name)
    ok, buf = cv2.imencode(".png", np.full((8, 8), 128, np.uint8))
    with open(path, "wb") as fh:
        fh.write(buf.tobytes())
    return path


def test_imagefolder_name_not_utf8_is_a_report_row(tmp_path: Path, capsys) -> None:
    root = _class_folders(tmp_path / "set", {"happy": 1, "surprise": 2})
    _write_bytes_name(root / "happy", b"S009_001_0000000\xff.png")
    bad_dir = os.path.join(os.fsencode(root), b"sad\xfe")
    os.mkdir(bad_dir)
    df, report = scan(root, "imagefolder")
    assert len(df) == 6
    rows = [(p, r) for p, r in report.skipped if "UTF-8" in r]
    assert len(rows) == 2 and all(r == "file name is not valid UTF-8; rename it" for _, r in rows)
    shown = " ".join(p for p, _ in rows)
    assert "\\xff" in shown and "\\xfe" in shown
    report.summary(df).encode("utf-8")  # printable
    out = tmp_path / "m.parquet"
    assert main(["manifest", str(root), "--format", "imagefolder", "-o", str(out), "--folds", "2"]) == 0
    captured = capsys.readouterr()
    assert "not valid UTF-8" in captured.out and "Traceback" not in captured.err
    assert len(read_manifest(out)[0]) == 6


def test_name_not_utf8_in_ckplus_and_folder(tmp_path: Path) -> None:
    root = make_ckplus_tree(tmp_path / "ck")
    _write_bytes_name(root / "cohn-kanade-images" / "S005" / "001", b"S005_001_\xff00006.png")
    os.mkdir(os.path.join(os.fsencode(root / "cohn-kanade-images" / "S005"), b"\xe9\xe9"))
    df, meta, report = build_manifest(root, "ckplus", n_folds=2)
    assert df.set_index("sequence_id").loc["S005_001", "n_frames"] == 5
    assert sum("not valid UTF-8" in r for _, r in report.skipped) == 2
    write_manifest(df, tmp_path / "ck.parquet", meta)
    media = tmp_path / "media"
    write_video(media / "a.mp4")
    folder = media / "frames"
    write_image(folder / "000.png")
    _write_bytes_name(folder, b"\xff001.png")
    df, report = scan(media, "folder")
    assert len(_all_frames(df)) == 1 and any("not valid UTF-8" in r for _, r in report.skipped)


@pytest.mark.parametrize(
    ("pattern", "group"),
    [(r"^(?P<subject>S\d+)?_(?P<sequence>\d+)", "subject"), (r"^(?P<subject>S\d+)_(?P<sequence>\d+)?", "sequence")],
)
def test_optional_group_unmatched_is_a_report_row(tmp_path: Path, capsys, pattern: str, group: str) -> None:
    root = tmp_path / "set"
    for cls in ("happy", "surprise"):
        for s in range(1, 4):
            write_image(root / cls / f"S{s}_00{s}.png")
        write_image(root / cls / ("_007.png" if group == "subject" else "S9_x.png"))
    df, report = scan(root, "imagefolder", name_pattern=pattern)
    assert len(df) == 6
    rows = [r for _, r in report.skipped if r.startswith("name does not match the pattern")]
    assert len(rows) == 2 and all(f"group {group!r} matched nothing" in r and pattern in r for r in rows)
    out = tmp_path / "m.parquet"
    assert main(["manifest", str(root), "--format", "imagefolder", "--pattern", pattern, "-o", str(out)]
                + ["--folds", "2"]) == 0  # fmt: skip
    assert "Traceback" not in capsys.readouterr().err


# --- 13. one class is refused; small classes warned about -------------------------------------------------------


def test_one_class_dataset_is_refused(tmp_path: Path, capsys) -> None:
    root = _class_folders(tmp_path / "set", {"happy": 1}, subjects=6)
    with pytest.raises(ManifestError, match="at least 2 classes"):
        build_manifest(root, "imagefolder", n_folds=2)
    code = main(["manifest", str(root), "--format", "imagefolder", "-o", str(tmp_path / "m.parquet"), "--folds", "5"])
    assert code == 2
    assert "at least 2 classes" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "m.parquet").exists()


def test_one_class_in_the_class_set_is_refused(tmp_path: Path) -> None:
    """Two class folders, but only one inside the class set: one labelled class is still one."""
    root = _class_folders(tmp_path / "set", {"happy": 1, "neutral": 2}, subjects=4)
    with pytest.raises(ManifestError, match="only class 'happy'"):
        build_manifest(root, "imagefolder", n_folds=2, classes="ckplus7")


def test_fold_file_with_one_class_is_refused(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "set", {"surprise": 1}, subjects=4)
    folds = tmp_path / "folds.csv"
    folds.write_text("subject,fold\n" + "".join(f"S{s:03d},{s % 2}\n" for s in range(1, 5)))
    with pytest.raises(ManifestError, match="at least 2 classes"):
        build_manifest(root, "imagefolder", n_folds=2, fold_file=folds)


def test_class_smaller_than_folds_is_warned_about(tmp_path: Path, caplog) -> None:
    root = _class_folders(tmp_path / "set", {"happy": 1}, subjects=6)
    write_image(root / "surprise" / "S001_002_00000001.png")
    write_image(root / "surprise" / "S002_002_00000001.png")
    with caplog.at_level(logging.WARNING, logger="data_manifests.folds"):
        df, _, _ = build_manifest(root, "imagefolder", n_folds=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "surprise 2" in warnings[0] and "3 folds" in warnings[0]
    assert "happy" not in warnings[0]
    assert df["fold"].notna().all()


# --- 14. TIFF frames; a dangling class-folder link --------------------------------------------------------------


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".TIFF"])
def test_tiff_frames_are_image_files(tmp_path: Path, ext: str) -> None:
    root = _class_folders(tmp_path / "set", {"happy": 1, "surprise": 2}, ext=ext)
    df, report = scan(root, "imagefolder")
    assert len(df) == 6 and (df["n_frames"] == 3).all()
    assert not [r for _, r in report.skipped if "not an image" in r]
    media = tmp_path / "media"
    for f in range(3):
        write_image(media / "seq" / f"{f:03d}{ext}")
    df, _ = scan(media, "folder")
    assert df.iloc[0]["n_frames"] == 3


def test_tiff_frames_decode(tmp_path: Path) -> None:
    from stages.preprocess.decode import SequenceSource, iter_frames

    path = tmp_path / "f.tiff"
    assert cv2.imwrite(str(path), np.full((32, 40), 90, np.uint8))
    (frame,) = iter_frames(SequenceSource("s", frame_paths=(str(path),)), [0], "grey")
    assert frame.image.shape == (32, 40) and int(frame.image[0, 0]) == 90


def test_dangling_class_folder_link_is_reported(tmp_path: Path, capsys) -> None:
    root = _class_folders(tmp_path / "set", {"happy": 1, "surprise": 2})
    (root / "fear").symlink_to(tmp_path / "moved_away", target_is_directory=True)
    df, report = scan(root, "imagefolder")
    assert len(df) == 6 and _reasons(report)["fear"].startswith("broken link")
    assert (
        main(["manifest", str(root), "--format", "imagefolder", "-o", str(tmp_path / "m.parquet"), "--folds", "2"]) == 0
    )
    assert "broken link" in capsys.readouterr().out
