"""Write generated sequences in the real datasets' layouts (``ckplus``, ``oulu``) or as videos (``videos``).

ckplus (640x490 grey PNG), as in the CK+ release::

    cohn-kanade-images/S005/001/S005_001_00000001.png ...        frames, 8-digit numbers from 00000001
    Landmarks/S005/001/S005_001_00000001_landmarks.txt ...       every frame: 68 rows "   x   y" (%.7e),
                                                                 the true warped landmarks, 0-based pixels
    FACS/S005/001/S005_001_<peak>_facs.txt                       "   AU   intensity" rows at the peak frame
    Emotion/S005/001/S005_001_<peak>_emotion.txt                 "   3.0000000e+00" (CK+ code), labelled only

  with the release's quirks: ``.DS_Store`` files, unlabelled sequences (some with an empty Emotion folder).

oulu (320x240 colour JPEG)::

    OriginalImg/VL/Strong/P001/<Anger|Disgust|Fear|Happiness|Sadness|Surprise>/000.jpeg, 001.jpeg, ...
    _truth/VL_Strong_P001_Anger.npy                              true landmarks, float32 [T, 68, 2]

videos (640x480 colour; about 1 in 5 MJPG .avi, the rest mp4v .mp4, 25 fps)::

    videos/S005_001.mp4 ...
    labels.csv                                                   path,subject,label (path relative to it)
    _truth/S005_001.npy                                          true landmarks, float32 [T, 68, 2]

Every layout gets a ``README.txt``. Frames arrive as uint8 grey (H, W) or BGR (H, W, 3).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_manifests.demo.plan import SequenceSpec
from data_manifests.demo.prototypes import facs_codes
from data_manifests.demo.sequences import Canvas, RenderedSequence
from data_manifests.schema import CKPLUS_CODES
from stages.atomic_io import atomic_open

CKPLUS_CODE_OF = {name: code for code, name in CKPLUS_CODES.items()}
OULU_FOLDERS = {
    "anger": "Anger",
    "disgust": "Disgust",
    "fear": "Fear",
    "happy": "Happiness",
    "sadness": "Sadness",
    "surprise": "Surprise",
}
OULU_CONDITION = ("VL", "Strong")
VIDEO_FPS = 25.0
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(2036)  # header of a real .DS_Store, zero-padded


def ck_float(value: float) -> str:
    """A number the way CK+'s text files write it: 3 spaces then %.7e (``   3.0000000e+00``)."""
    return f"   {value:.7e}"


def write_demo_file(path: Path, data: bytes) -> None:
    """Write one file of a demo set atomically (parents created), without fsync: a killed generator leaves no
    half-written file, and a sequence counts as done only once its progress marker is written (an operating-system
    crash may still lose the last files written; fsync would cost ~10 ms a file, thousands of them a set)."""
    with atomic_open(path, "wb", durable=False) as fh:
        fh.write(data)


def _write_text(path: Path, text: str) -> None:
    write_demo_file(path, text.encode("utf-8"))


def _imwrite(path: Path, img: np.ndarray, params: list[int] | None = None) -> None:
    ok, buf = cv2.imencode(path.suffix, img, params or [])
    if not ok:
        raise OSError(f"{path}: image encoding failed")
    write_demo_file(path, buf.tobytes())


# ---------------------------------------------------------------------------------------------- ckplus


def ckplus_landmark_text(pts: np.ndarray) -> str:
    """68 rows ``   x   y`` in CK+'s %.7e format."""
    return "".join(f"{ck_float(x)}{ck_float(y)}\n" for x, y in pts)


def write_ckplus(root: Path, spec: SequenceSpec, seq: RenderedSequence) -> int:
    """Write one sequence in the CK+ layout; returns the number of frames."""
    sid, num = spec.subject, f"{spec.number:03d}"
    rel = Path(sid) / num
    for k, (frame, pts) in enumerate(zip(seq.frames, seq.landmarks, strict=True), start=1):
        stem = f"{sid}_{num}_{k:08d}"
        _imwrite(root / "cohn-kanade-images" / rel / f"{stem}.png", frame)
        _write_text(root / "Landmarks" / rel / f"{stem}_landmarks.txt", ckplus_landmark_text(pts))
    peak = f"{sid}_{num}_{len(seq.frames):08d}"
    facs = "".join(f"{ck_float(au)}{ck_float(level)}\n" for au, level in facs_codes(seq.expression))
    _write_text(root / "FACS" / rel / f"{peak}_facs.txt", facs)
    if spec.label is not None:
        _write_text(root / "Emotion" / rel / f"{peak}_emotion.txt", f"{ck_float(CKPLUS_CODE_OF[spec.label])}\n")
    elif spec.index % 2 == 0:  # the release has empty Emotion folders for some unlabelled sequences
        (root / "Emotion" / rel).mkdir(parents=True, exist_ok=True)
    return len(seq.frames)


def finish_ckplus(root: Path, specs: list[SequenceSpec]) -> None:
    """Stray ``.DS_Store`` files, as in the real release."""
    first = specs[0].subject if specs else "S005"
    for d in (
        root,
        root / "cohn-kanade-images",
        root / "cohn-kanade-images" / first,
        root / "Emotion",
        root / "Landmarks" / first,
    ):
        write_demo_file(d / ".DS_Store", DS_STORE)


# ---------------------------------------------------------------------------------------------- oulu


def oulu_sequence_id(spec: SequenceSpec) -> str:
    """``VL_Strong_P001_Anger``: the manifest id the Oulu scanner gives this sequence."""
    return "_".join([*OULU_CONDITION, spec.subject, OULU_FOLDERS[spec.label or ""]])


def write_oulu(root: Path, spec: SequenceSpec, seq: RenderedSequence) -> int:
    """Write one sequence in the Oulu-CASIA layout (JPEG frames 000.jpeg...) plus its truth sidecar."""
    folder = root / "OriginalImg" / Path(*OULU_CONDITION) / spec.subject / OULU_FOLDERS[spec.label or ""]
    for k, frame in enumerate(seq.frames):
        _imwrite(folder / f"{k:03d}.jpeg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    _save_npy(root / "_truth" / f"{oulu_sequence_id(spec)}.npy", seq.landmarks)
    return len(seq.frames)


def finish_oulu(root: Path, specs: list[SequenceSpec]) -> None:
    """Nothing beyond the README."""


# ---------------------------------------------------------------------------------------------- videos


def video_name(spec: SequenceSpec) -> str:
    """``S005_001.mp4``, or ``.avi`` for about one sequence in five."""
    ext = ".avi" if spec.index % 5 == 4 else ".mp4"
    return f"{spec.subject}_{spec.number:03d}{ext}"


def write_video(root: Path, spec: SequenceSpec, seq: RenderedSequence) -> int:
    """Write one sequence as a colour video (mp4v in .mp4, MJPG in .avi) via a temporary name."""
    path = root / "videos" / video_name(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.name}")
    h, w = seq.frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(tmp), fourcc, VIDEO_FPS, (w, h), True)
    if not writer.isOpened():
        raise OSError(f"{tmp}: OpenCV cannot open a video writer for {path.suffix}")
    for frame in seq.frames:
        writer.write(frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    os.replace(tmp, path)
    _save_npy(root / "_truth" / f"{path.stem}.npy", seq.landmarks)
    return len(seq.frames)


def finish_videos(root: Path, specs: list[SequenceSpec]) -> None:
    """``labels.csv``: one row per video, paths relative to the CSV, canonical class names."""
    rows = sorted((f"videos/{video_name(s)}", s.subject, s.label or "") for s in specs)
    with atomic_open(root / "labels.csv", "w") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "subject", "label"])
        out.writerows(rows)


def _save_npy(path: Path, landmarks: np.ndarray) -> None:
    with atomic_open(path, "wb", durable=False) as fh:
        np.save(fh, landmarks.astype(np.float32))


# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Layout:
    """A demo layout: frame canvas, whether the plan is Oulu-like (every subject all 6 classes), whether it
    adds unlabelled sequences, the per-sequence writer and the finishing step, and the top-level names it
    creates (removed when an interrupted generation with other parameters is restarted)."""

    name: str
    canvas: Canvas
    oulu_plan: bool
    unlabelled: bool
    write: Callable[[Path, SequenceSpec, RenderedSequence], int]
    finish: Callable[[Path, list[SequenceSpec]], None]
    trees: tuple[str, ...]
    description: str


LAYOUTS: dict[str, Layout] = {
    "ckplus": Layout(
        "ckplus",
        Canvas(640, 490, True, (200.0, 260.0)),
        False,
        True,
        write_ckplus,
        finish_ckplus,
        ("cohn-kanade-images", "Landmarks", "FACS", "Emotion", ".DS_Store"),
        "CK+ release layout: 640x490 grey PNG frames, Emotion/Landmarks/FACS text files",
    ),
    "oulu": Layout(
        "oulu",
        Canvas(320, 240, False, (100.0, 128.0)),
        True,
        False,
        write_oulu,
        finish_oulu,
        ("OriginalImg", "_truth"),
        "Oulu-CASIA layout: OriginalImg/VL/Strong/P###/<Class>/###.jpeg, 320x240 colour JPEG",
    ),
    "videos": Layout(
        "videos",
        Canvas(640, 480, False, (170.0, 250.0)),
        False,
        False,
        write_video,
        finish_videos,
        ("videos", "_truth", "labels.csv"),
        "640x480 colour videos (mp4v .mp4, some MJPG .avi) with labels.csv",
    ),
}
