"""The Kaggle ``fer2013.csv`` -> one PNG file per row (written once, resumable) and a manifest row per image.

The CSV has columns ``emotion,pixels,Usage`` (header names compared stripped and case-insensitive, so the
``icml_face_data.csv`` spelling `` Usage`` reads too): ``emotion`` a code 0-6 (:data:`FER_CODES`), ``pixels``
2304 space-separated grey values 0-255 of a 48x48 image, ``Usage`` ``Training`` / ``PublicTest`` /
``PrivateTest`` (the split ``train`` / ``val`` / ``test``). Only ``pixels`` is required: without ``emotion`` the
rows are unlabelled, without ``Usage`` they have no split (and get CV folds like any dataset).

What is written where: the pipeline reads frames from image files, so each row becomes
``IMAGES/<Usage>/<Usage>_<n>_<hash>.png`` (``n`` the 0-based data row of the CSV, ``hash`` 10 hex digits of the
row's pixel text; ``IMAGES/all/fer2013_<n>_<hash>.png`` without a Usage column). ``IMAGES`` is the folder the
caller names (``--fer2013-images``, ``data.fer2013_images``), by default ``<CSV folder>/<CSV name>_images``. A
file already there is not written again, so a scan killed half-way resumes and a later scan writes nothing; a
row whose pixels changed gets a new name (its hash), so a stale image is never used. Each file is written
atomically (a temp file renamed into place) without a per-file fsync; one ``os.sync`` follows the last write.
Files of the folders that no row of this CSV names (an earlier version of the CSV) are counted in a note and
left alone.

Row ids: ``sequence_id`` = subject = ``<Usage>_<n>`` (FER2013 names no people: every image is its own subject).
Rows with bad pixels, an unknown Usage or the wrong number of fields are report rows (``CSV:LINE``, the line
counting the header as 1), never a traceback; an unknown emotion code keeps the image, unlabelled, with a note.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_manifests.errors import ManifestError
from data_manifests.scan_common import ScanReport, image_row
from data_manifests.walk import shown
from stages.atomic_io import atomic_path, clean_stale_temps

DATASET = "fer2013"
SIDE = 48
"""FER2013 images are SIDE x SIDE grey pixels."""

FER_CODES: dict[str, str] = {
    "0": "anger",
    "1": "disgust",
    "2": "fear",
    "3": "happy",
    "4": "sadness",
    "5": "surprise",
    "6": "neutral",
}
"""FER2013's emotion codes (angry, disgust, fear, happy, sad, surprise, neutral) -> canonical class names."""

USAGE_SPLITS: dict[str, str] = {"training": "train", "publictest": "val", "privatetest": "test"}
"""FER2013's Usage values (lower case) -> the manifest's split."""

USAGE_NAMES: dict[str, str] = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
"""The manifest's split -> FER2013's spelling of its Usage (image folder and id prefix)."""

NO_USAGE = ("all", "fer2013")
"""(image folder, id prefix) of the rows of a CSV without a Usage column."""

STALE_TEMP_S = 3600.0
"""A temp file of an image writer is removed on start-up when its writer is gone or it is older than this."""


def default_images_dir(csv_path: Path) -> Path:
    """Where the PNG files of ``csv_path``'s rows go unless the caller names a folder."""
    return csv_path.parent / f"{csv_path.stem}_images"


def is_fer_csv(path: Path) -> bool:
    """True when ``path``'s header line names a ``pixels`` column (reads the first line only)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return "pixels" in {h.strip().lower() for h in header}


@dataclass
class _Images:
    """The PNG folders of one scan: names already there per folder, names this scan uses, files written."""

    root: Path
    present: dict[str, set[str]] = field(default_factory=dict)
    used: dict[str, set[str]] = field(default_factory=dict)
    written: int = 0

    def has(self, folder: str, name: str) -> bool:
        if folder not in self.present:
            path = self.root / folder
            clean_stale_temps(path, STALE_TEMP_S)
            self.present[folder] = _file_names(path)
            self.used[folder] = set()
        self.used[folder].add(name)
        return name in self.present[folder]

    def write(self, folder: str, name: str, pixels: np.ndarray) -> None:
        import cv2  # only when an image is written

        ok, buf = cv2.imencode(".png", pixels.reshape(SIDE, SIDE))
        if not ok:
            raise ManifestError(f"{self.root / folder / name}: PNG encoding failed")
        with atomic_path(self.root / folder / name, durable=False) as tmp:
            tmp.write_bytes(buf.tobytes())
        self.present[folder].add(name)
        self.written += 1

    def unused(self) -> int:
        return sum(len(names - self.used[folder]) for folder, names in self.present.items())


def _file_names(folder: Path) -> set[str]:
    """Names in ``folder`` (one ``os.scandir``), temp files left out; empty for a folder not made yet."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {e.name for e in it if not e.name.startswith(".")}


def parse_pixels(text: str) -> tuple[np.ndarray | None, str | None]:
    """(48x48 values as uint8, None) for a valid pixel text, else (None, why it is not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy: "could not be read to its end"
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError):
            return None, "bad pixels: not a list of whole numbers"
    if values.size != SIDE * SIDE:
        return None, f"bad pixels: {values.size} values, expected {SIDE * SIDE} ({SIDE}x{SIDE})"
    if values.min() < 0 or values.max() > 255:
        return None, "bad pixels: values outside 0..255"
    return values.astype(np.uint8), None


def _prepare_images_dir(images_dir: Path) -> Path:
    images_dir = Path(images_dir).expanduser().resolve()
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(
            f"{images_dir}: cannot make the folder for the FER2013 images ({exc.strerror or exc}); name a writable "
            "folder with --fer2013-images (data.fer2013_images)"
        ) from None
    if not os.access(images_dir, os.W_OK | os.X_OK):
        raise ManifestError(
            f"{images_dir}: cannot write the FER2013 images there (permission denied); name a writable folder "
            "with --fer2013-images (data.fer2013_images)"
        )
    return images_dir


def _columns(header: list[str], csv_path: Path) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    if "pixels" not in names:
        raise ManifestError(
            f"{csv_path}: not a FER2013 CSV (needs columns emotion,pixels,Usage; found: {', '.join(header)[:200]})"
        )
    return {n: names.index(n) for n in ("emotion", "pixels", "usage") if n in names}


def scan_fer2013_csv(
    csv_path: Path, report: ScanReport, classes: list[str], set_name: str, images_dir: Path | None
) -> list[dict]:
    """Manifest rows (one per CSV row with valid pixels) of ``csv_path``, writing the PNG files that are missing
    (see the module docstring); what is left out goes to ``report``. :class:`ManifestError` for an unreadable
    file, a file without a ``pixels`` column or an images folder that cannot be written."""
    images = _Images(_prepare_images_dir(images_dir or default_images_dir(csv_path)))
    rows: list[dict] = []
    try:
        with open(csv_path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            col = _columns(next(reader, []), csv_path)
            for n, fields in enumerate(reader):
                row = _row(csv_path, n, fields, col, images, report, classes, set_name)
                if row is not None:
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{csv_path}: not a readable FER2013 CSV (not UTF-8 text: {exc.reason})") from None
    except csv.Error as exc:
        raise ManifestError(f"{csv_path}: not a readable FER2013 CSV ({exc})") from None
    except OSError as exc:
        raise ManifestError(f"{shown(csv_path)}: cannot read the CSV ({exc.strerror or exc})") from None
    if images.written:
        os.sync()  # the files were written without a per-file fsync: make them durable once
    kept = len(rows) - images.written
    report.note(images.root, f"FER2013 images: {images.written} written, {kept} already there")
    if images.unused():
        report.note(images.root, f"{images.unused()} files there belong to no row of this CSV (not used, left alone)")
    return rows


def _row(
    csv_path: Path,
    n: int,
    fields: list[str],
    col: dict[str, int],
    images: _Images,
    report: ScanReport,
    classes: list[str],
    set_name: str,
) -> dict | None:
    """The manifest row of data row ``n`` (writing its PNG when missing), or None after reporting why not."""
    where = f"{csv_path}:{n + 2}"
    if len(fields) < len(col) or len(fields) <= max(col.values()):
        if fields:  # a blank line is no row at all
            report.skip(where, f"malformed row: {len(fields)} fields, the header names {max(col.values()) + 1}")
        return None
    split = None
    folder, prefix = NO_USAGE
    if "usage" in col:
        usage = fields[col["usage"]].strip()
        split = USAGE_SPLITS.get(usage.lower())
        if split is None:
            report.skip(where, f"unknown Usage {usage[:40]!r}: not Training, PublicTest or PrivateTest")
            return None
        folder = prefix = USAGE_NAMES[split]
    text = fields[col["pixels"]]
    seq_id = f"{prefix}_{n}"
    name = f"{seq_id}_{hashlib.blake2b(text.encode(), digest_size=5).hexdigest()}.png"
    if not images.has(folder, name):
        pixels, why = parse_pixels(text)
        if pixels is None:
            report.skip(where, str(why))
            return None
        images.write(folder, name, pixels)
    canon, note = None, "no emotion column in the CSV"
    if "emotion" in col:
        code = fields[col["emotion"]].strip()
        canon = FER_CODES.get(code)
        note = None if canon else f"unknown emotion code: {code[:20]!r} (FER2013 codes are 0-6)"
    return image_row(
        sequence_id=seq_id,
        dataset=DATASET,
        subject=seq_id,
        canon=canon,
        classes=classes,
        set_name=set_name,
        path=str(images.root / folder / name),
        note=note,
        split=split,
    )
