"""Tiny fake dataset trees for scanner and fold tests (valid 8x8 images, a valid 4-frame video).

Importable from tests as ``from fixtures_datasets import ...`` (pytest puts tests/ on sys.path: the folder has
no ``__init__.py`` and the default import mode prepends it).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from data_manifests.demo.plan import CKPLUS_COUNTS  # CK+'s labelled sequences per class

# The smallest two-stream model the CLI tests train: config overrides (`--set` strings) shared by every module that
# runs cv / train / predict end to end, each adding what it needs (epochs, folds, workers, align size).
TINY_MODEL = [
    "model.appearance.channels=[8, 16]",
    "model.appearance.skip_dim=8",
    "model.geometry.hidden=16",
    "model.input.size=32",
]


@functools.cache
def _image_bytes(ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, np.full((8, 8), 128, np.uint8))
    assert ok
    return buf.tobytes()


@functools.cache
def _video_bytes(ext: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{ext}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (16, 16))
        for i in range(4):
            writer.write(np.full((16, 16, 3), 40 * i, np.uint8))
        writer.release()
        return path.read_bytes()


def write_image(path: Path) -> Path:
    """A valid 8x8 grey image; the format follows the extension (.png, .jpg, .jpeg, .bmp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_image_bytes(".jpg" if path.suffix.lower() == ".jpeg" else path.suffix.lower()))
    return path


def write_video(path: Path) -> Path:
    """A valid 4-frame 16x16 MJPG video (container bytes written as .avi; any video extension accepted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_video_bytes(".avi"))
    return path


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _ck_frame(images: Path, subj: str, seq: str, n: int, pad: bool = True) -> Path:
    num = f"{n:08d}" if pad else str(n)
    return write_image(images / subj / seq / f"{subj}_{seq}_{num}.png")


def _ck_emotion(emotion: Path, subj: str, seq: str, frame: int, content: str | bytes) -> Path:
    return write_text(emotion / subj / seq / f"{subj}_{seq}_{frame:08d}_emotion.txt", content)


def _ck_code(code: float) -> str:
    return f"   {code:.7e}\n"


# What make_ckplus_tree builds, by sequence: (CK+ code or None, note) -- used by the tests' expectations.
CKPLUS_TREE_LABELS: dict[str, int | None] = {
    "S005_001": 3,  # disgust, 5 frames, landmarks for all frames
    "S010_002": 7,  # surprise, 12 unpadded frames (lexicographic order is wrong), landmarks for frames 1..6
    "S010_003": None,  # no emotion file
    "S011_001": None,  # garbage label file
    "S011_002": None,  # unreadable (binary) label file
    "S011_003": None,  # code 9: out of range
    "S014_001": 2,  # contempt, frames 1,2,3,6,7 (missing 4..5)
    "S022_001": 5,  # happy, emotion file names frame 3 of 4 (peak not last)
    "S022_002": 1,  # anger
}


def make_ckplus_tree(root: Path, *, images_dir: str = "", emotion_dir: str = "", landmarks: bool = True) -> Path:
    """A CK+ tree with the real release's quirks under ``root`` (trees optionally one folder down:
    ``images_dir`` / ``emotion_dir`` name the extra folder). Returns ``root``.

    Sequences: see :data:`CKPLUS_TREE_LABELS`; plus an empty sequence folder S014/002, .DS_Store / Thumbs.db /
    AppleDouble files, a README.txt inside a sequence folder, and an Emotion folder S030/001 without images.
    """
    images = root / images_dir / "cohn-kanade-images"
    emotion = root / emotion_dir / "Emotion"
    lm = root / images_dir / "Landmarks"
    for n in range(1, 6):
        _ck_frame(images, "S005", "001", n)
        if landmarks:
            write_text(lm / "S005" / "001" / f"S005_001_{n:08d}_landmarks.txt", "1.0 2.0\n" * 68)
    _ck_emotion(emotion, "S005", "001", 5, _ck_code(3))
    for n in range(1, 13):
        _ck_frame(images, "S010", "002", n, pad=False)
        if landmarks and n <= 6:
            write_text(lm / "S010" / "002" / f"S010_002_{n}_landmarks.txt", "1.0 2.0\n" * 68)
    write_text(emotion / "S010" / "002" / "S010_002_12_emotion.txt", _ck_code(7))
    for n in range(1, 4):
        _ck_frame(images, "S010", "003", n)
    for seq, content in (("001", "garbage\n"), ("002", b"\xff\xfe\x00\x81\x9f"), ("003", _ck_code(9))):
        for n in range(1, 5):
            _ck_frame(images, "S011", seq, n)
        _ck_emotion(emotion, "S011", seq, 4, content)
    for n in (1, 2, 3, 6, 7):
        _ck_frame(images, "S014", "001", n)
    _ck_emotion(emotion, "S014", "001", 7, _ck_code(2))
    (images / "S014" / "002").mkdir(parents=True)
    for n in range(1, 5):
        _ck_frame(images, "S022", "001", n)
        _ck_frame(images, "S022", "002", n)
    _ck_emotion(emotion, "S022", "001", 3, _ck_code(5))
    _ck_emotion(emotion, "S022", "002", 4, _ck_code(1))
    _ck_emotion(emotion, "S030", "001", 9, _ck_code(4))
    write_text(images / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write_text(images / "S005" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write_text(images / "S005" / "001" / "._S005_001_00000001.png", b"\x00\x05\x16\x07")
    write_text(images / "S010" / "002" / "Thumbs.db", b"\x00")
    write_text(images / "S022" / "001" / "README.txt", "notes")
    return root


OULU_CLASSES = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


def make_oulu_tree(
    root: Path,
    *,
    tree: str = "OriginalImg",
    systems: tuple[str, ...] = ("VL", "NI"),
    illuminations: tuple[str, ...] = ("Strong", "Weak", "Dark"),
    subjects: tuple[str, ...] = ("P001", "P002"),
    classes: tuple[str, ...] = OULU_CLASSES,
    n_frames: int = 3,
    videos: bool = False,
) -> Path:
    """``root/tree/{system}/{illumination}/{subject}/{Class}/000.jpeg ...`` (or ``{Class}.avi`` when
    ``videos``). Returns ``root``."""
    for s in systems:
        for ill in illuminations:
            for p in subjects:
                for c in classes:
                    base = root / tree / s / ill / p
                    if videos:
                        write_video(base / f"{c}.avi")
                    else:
                        for n in range(n_frames):
                            write_image(base / c / f"{n:03d}.jpeg")
    return root


def ckplus_like_manifest(seed: int = 0, n_subjects: int = 118, n_unlabelled: int = 266) -> pd.DataFrame:
    """A manifest shaped like CK+: ``n_subjects`` subjects holding 327 labelled sequences with CK+'s class
    counts (at least one per subject, the rest spread at random), plus unlabelled sequences of the same and 5
    extra subjects. Frames are fake paths (folds never look at them)."""
    rng = np.random.default_rng(seed)
    labels = [c for c, n in CKPLUS_COUNTS.items() for _ in range(n)]
    rng.shuffle(labels)
    subjects = [f"S{500 + 7 * i:03d}" for i in range(n_subjects)]
    owner = list(range(n_subjects)) + list(rng.choice(n_subjects, size=len(labels) - n_subjects))
    rows = []
    counter: dict[str, int] = {}
    for lab, i in zip(labels, owner, strict=True):
        s = subjects[i]
        counter[s] = counter.get(s, 0) + 1
        rows.append((f"{s}_{counter[s]:03d}", s, lab))
    extra_subjects = [f"S{990 + i}" for i in range(5)]
    pool = subjects + extra_subjects
    for j in range(n_unlabelled):
        s = pool[j % len(pool)]
        counter[s] = counter.get(s, 0) + 1
        rows.append((f"{s}_{counter[s]:03d}", s, None))
    return pd.DataFrame(
        {
            "sequence_id": [r[0] for r in rows],
            "dataset": "ckplus",
            "subject": [r[1] for r in rows],
            "label": [r[2] for r in rows],
            "labelled": [r[2] is not None for r in rows],
            "label_note": [None if r[2] else "no emotion file" for r in rows],
            "n_frames": 3,
            "source_type": "frames",
            "frame_paths": [[f"/x/{r[0]}_{k}.png" for k in range(3)] for r in rows],
            "peak_index": 2,
        }
    )


# ---------------------------------------------------------------------------------------- FER2013, JAFFE, KDEF

FER_CLASS_FOLDERS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
"""The class folders of FER2013's folder export; their canonical names are anger ... sadness, surprise."""


def fer_pixels(seed: int) -> str:
    """A 48x48 grey image as FER2013's CSV writes it: 2304 space-separated values 0-255."""
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 48 * 48)))


# (emotion code, Usage) of the rows of make_fer_csv: two rows of each usage, then the awkward rows.
FER_CSV_ROWS: list[tuple[str, str]] = [
    ("0", "Training"),
    ("3", "Training"),
    ("6", "Training"),
    ("4", "PublicTest"),
    ("5", "PublicTest"),
    ("1", "PrivateTest"),
    ("2", "PrivateTest"),
]


def make_fer_csv(path: Path, *, bad_rows: bool = False) -> Path:
    """A tiny ``fer2013.csv`` (header ``emotion,pixels,Usage``) of :data:`FER_CSV_ROWS`; with ``bad_rows`` also
    rows 7-10: too few pixels, an unknown Usage, an unknown emotion code (a valid image), a non-numeric pixel."""
    lines = ["emotion,pixels,Usage"]
    lines += [f"{code},{fer_pixels(i)},{usage}" for i, (code, usage) in enumerate(FER_CSV_ROWS)]
    if bad_rows:
        lines += [
            "0,1 2 3,Training",
            f"0,{fer_pixels(8)},Holdout",
            f"9,{fer_pixels(9)},Training",
            f"0,{fer_pixels(10).replace(' 1', ' x', 1)},Training",
        ]
    return write_text(path, "\n".join(lines) + "\n")


def make_fer_folders(root: Path, *, splits: tuple[str, ...] = ("train", "validation", "test")) -> dict[str, int]:
    """FER2013's folder export: ``ROOT/<split>/<class>/<Usage>_<n>.jpg``, two images per class in the train folder
    and one in the others; returns the number of images per split folder."""
    usage = {"train": "Training", "training": "Training", "validation": "PublicTest", "val": "PublicTest"}
    counts: dict[str, int] = {}
    n = 0
    for split in splits:
        per_class = 2 if split.lower() in ("train", "training") else 1
        prefix = usage.get(split.lower(), "PrivateTest")
        for cls in FER_CLASS_FOLDERS:
            for _ in range(per_class):
                n += 1
                write_image(root / split / cls / f"{prefix}_{1000 + n}.jpg")
        counts[split] = per_class * len(FER_CLASS_FOLDERS)
    return counts


JAFFE_SUBJECTS = ["KA", "KL", "KM", "NA"]
JAFFE_CODES = ["AN", "DI", "FE", "HA", "NE", "SA", "SU"]


def make_jaffe_folder(root: Path) -> list[str]:
    """A flat JAFFE folder of ``KA.AN1.39.tiff`` files written by cv2 (each subject, each code once); returns the
    stems."""
    stems = []
    root.mkdir(parents=True, exist_ok=True)
    for s, subject in enumerate(JAFFE_SUBJECTS):
        for c, code in enumerate(JAFFE_CODES):
            stem = f"{subject}.{code}{1 + c % 3}.{10 * s + c}"
            assert cv2.imwrite(str(root / f"{stem}.tiff"), np.full((16, 16), 30 * c, np.uint8))
            stems.append(stem)
    return stems


KDEF_PERSONS = ["AF01", "BF01", "AM02", "BM02", "AF03", "AM04"]
KDEF_CODES = ["AF", "AN", "DI", "HA", "NE", "SA", "SU"]
KDEF_ANGLES = ["FL", "HL", "S", "HR", "FR"]


def make_kdef_tree(root: Path) -> Path:
    """KDEF as it ships: ``ROOT/<person>/<person><code><angle>.JPG`` for every code and angle."""
    for person in KDEF_PERSONS:
        for code in KDEF_CODES:
            for angle in KDEF_ANGLES:
                write_image(root / person / f"{person}{code}{angle}.JPG")
    return root
