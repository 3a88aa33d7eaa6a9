"""FER2013 scanner: the Kaggle CSV or its folder export -> one-frame sequences with the dataset's own split.

ROOT may be:

- the CSV file itself, or a folder holding it (without split or class folders): rows become PNG files once, see
  :mod:`data_manifests.fer2013_csv` for what is written where;
- the folder export: split folders ``train|Training``, ``validation|val|PublicTest``, ``test|PrivateTest``
  (case-insensitive) each holding class folders (``angry disgust fear happy neutral sad surprise``, aliases
  accepted) of 48x48 grey images named ``Training_<n>.jpg`` / ``PublicTest_<n>.jpg`` / ``PrivateTest_<n>.jpg``;
- one split folder of that export (ROOT holds the class folders): its split comes from ROOT's name when that
  names one, else from each file's ``Training_`` / ``PublicTest_`` / ``PrivateTest_`` prefix, else none.

Every image is a one-frame sequence and its own subject (FER2013 names no people): ``sequence_id`` = subject =
the file stem (an id met twice gets its split and class appended, noted). The ``split`` column holds ``train`` /
``val`` / ``test``; such a manifest gets no CV folds (see :func:`data_manifests.scan.build_manifest`). A split
folder whose files carry another split's prefix (exports that put PublicTest into ``test/``) keeps the folder's
split, with one note. Nothing is decoded at scan time: one ``os.scandir`` per folder.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.fer2013_csv import DATASET, USAGE_NAMES, USAGE_SPLITS, is_fer_csv, scan_fer2013_csv
from data_manifests.scan_common import (
    ScanReport,
    canonical_class,
    class_set_name,
    entries,
    image_row,
    is_ignored_dir,
    is_system_file,
    require_root,
    resolve_classes,
    stray_reason,
)
from data_manifests.walk import Entry

SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "validation": "val",
    "val": "val",
    "publictest": "val",
    "test": "test",
    "privatetest": "test",
}
"""Split folder names (lower case) of the folder export -> the manifest's split."""

PREFERRED_CSV = "fer2013.csv"


def scan_fer2013(
    root: Path,
    *,
    classes: str | list[str] = "ckplus7",
    fer2013_images: Path | None = None,
    only_split: str | None = None,
    **_other_format_options: object,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan FER2013 as it ships (see the module docstring) into manifest rows with a ``split`` (folds null) and a
    report. ``fer2013_images``: where the CSV's rows are written as PNG files (default beside the CSV).
    ``only_split`` (``train`` / ``val`` / ``test``): in the folder export, the other split folders are not walked
    (reported as not read) when one folder of that split exists; every other layout is read whole, and the
    caller keeps the split's rows. `seqfer evaluate --split val` then lists 3,589 files, not 32,298.

    Raises :class:`ManifestError` for a missing root, a root holding neither the folder export nor a FER2013 CSV,
    or an images folder that cannot be written."""
    class_list = resolve_classes(classes)
    set_name = class_set_name(classes)
    path = Path(root).expanduser()
    if path.is_file():
        path = path.resolve()
        report = ScanReport(classes=class_list, dataset=DATASET, root=str(path))
        rows = scan_fer2013_csv(path, report, class_list, set_name, fer2013_images)
        return _frame(rows, path), report
    root = require_root(root)
    report = ScanReport(classes=class_list, dataset=DATASET, root=str(root))
    listed = entries(root, report)
    splits = [(e, SPLIT_FOLDERS[e.name.lower()]) for e in listed if e.is_dir() and e.name.lower() in SPLIT_FOLDERS]
    found = _Found(class_list, set_name)
    if splits:
        taken = {e.path for e, _ in splits}
        _report_root_extras([e for e in listed if e.path not in taken], report, "a split folder")
        wanted = only_split if any(split == only_split for _, split in splits) else None
        for entry, split in splits:
            if wanted is not None and split != wanted:
                report.skip(entry.path, f"split {split} not read: only {wanted} was asked for")
            elif report.claim(entry):
                _scan_split_folder(Path(entry.path), split, found, report)
    elif any(e.is_dir() and canonical_class(e.name) for e in listed):
        _scan_split_folder(root, SPLIT_FOLDERS.get(root.name.lower()), found, report, listed=listed)
    else:
        csv_path = _choose_csv(root, listed, report)
        rows = scan_fer2013_csv(csv_path, report, class_list, set_name, fer2013_images)
        return _frame(rows, root), report
    return _frame(found.rows, root), report


def _frame(rows: list[dict], where: Path) -> pd.DataFrame:
    if not rows:
        raise ManifestError(f"{where}: no FER2013 image found (no class folder holding an image, no valid CSV row)")
    return pd.DataFrame(rows)


def _choose_csv(root: Path, listed: list[Entry], report: ScanReport) -> Path:
    """The FER2013 CSV in ``root`` (``fer2013.csv`` when several have a ``pixels`` column); the other CSVs noted."""
    csvs = [
        Path(e.path) for e in listed if e.is_file() and e.name.lower().endswith(".csv") and is_fer_csv(Path(e.path))
    ]
    if not csvs:
        raise ManifestError(
            f"{root}: not a FER2013 root: no split folders (train, validation, test), no class folders and no CSV "
            "with a pixels column"
        )
    chosen = next((p for p in csvs if p.name.lower() == PREFERRED_CSV), csvs[0])
    for other in csvs:
        if other != chosen:
            report.skip(other, f"CSV not read: {chosen.name} is (give a CSV file as ROOT to read another)")
    return chosen


def _report_root_extras(listed: list[Entry], report: ScanReport, what: str) -> None:
    """Report the entries of ROOT that are not ``what`` (split or class folders)."""
    for e in listed:
        if is_system_file(e.name):
            report.skip(e.path, "system file")
        elif e.is_dir() and is_ignored_dir(e.name):
            report.skip(e.path, "hidden or system folder")
        elif e.is_dir():
            report.skip(e.path, f"not {what}: {e.name!r}")
        elif e.name.lower().endswith(".csv"):
            report.skip(e.path, "CSV not read: the folder export beside it is (give the CSV as ROOT to read it)")
        else:
            report.skip(e.path, f"file outside {what}")


@dataclass
class _Found:
    """Rows found so far, the ids they use, and the class set they are labelled against."""

    classes: list[str]
    set_name: str
    rows: list[dict] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


def _scan_split_folder(
    folder: Path, split: str | None, found: _Found, report: ScanReport, listed: list[Entry] | None = None
) -> None:
    """Add the images of the class folders in ``folder`` (one split, or None: each file's prefix decides)."""
    listed = entries(folder, report) if listed is None else listed
    classes = [(e, canonical_class(e.name)) for e in listed if e.is_dir() and canonical_class(e.name)]
    taken = {e.path for e, _ in classes}
    _report_root_extras([e for e in listed if e.path not in taken], report, "a class folder")
    prefixes: Counter[str] = Counter()
    for entry, canon in classes:
        if report.claim(entry):
            _scan_class_folder(Path(entry.path), str(canon), split, found, report, prefixes)
    other = {p: n for p, n in prefixes.items() if split is not None and USAGE_SPLITS[p] != split}
    if other:
        names = ", ".join(f"{n} {USAGE_NAMES[USAGE_SPLITS[p]]}_" for p, n in sorted(other.items()))
        report.note(folder, f"split folder of {split} holds images named {names}: kept in {split}, as the folder says")
    if split is None:
        report.note(folder, "split from each file's name prefix (Training_, PublicTest_, PrivateTest_)")


def _scan_class_folder(
    folder: Path, canon: str, split: str | None, found: _Found, report: ScanReport, prefixes: Counter[str]
) -> None:
    """One row per image of a class folder (one ``os.scandir``); the rest reported."""
    for item in entries(folder, report):
        reason = stray_reason(item, "a class folder")
        if reason is not None:
            report.skip(item.path, reason)
            continue
        if not report.claim(item):
            continue
        stem = os.path.splitext(item.name)[0]
        prefix = stem.split("_", 1)[0].lower()
        if prefix in USAGE_SPLITS:
            prefixes[prefix] += 1
        row_split = split if split is not None else USAGE_SPLITS.get(prefix)
        seq_id = stem
        if seq_id in found.ids:
            seq_id = f"{stem}_{row_split or 'nosplit'}_{canon}"
            report.note(item.path, f"image id met twice: {stem} is also in another folder; this one is {seq_id}")
        found.ids.add(seq_id)
        found.rows.append(
            image_row(
                sequence_id=seq_id,
                dataset=DATASET,
                subject=seq_id,
                canon=canon,
                classes=found.classes,
                set_name=found.set_name,
                path=item.path,
                split=row_split,
            )
        )
