"""KDEF scanner: ``ROOT/AF01/AF01ANS.JPG`` folders per session and person -> one-frame sequences of chosen views.

A KDEF name is ``<session><gender><id><expression><angle>``: ``AF01ANS`` = session A (of A/B), female, person 01,
expression ``AN`` (anger), angle ``S`` (straight). Expressions: ``AF AN DI HA NE SA SU`` (AF = afraid = fear);
angles: ``FL HL S HR FR`` (full left, half left, straight, half right, full right). Names and folders are compared
case-insensitively. Subject = gender + id (``F01``): ``AF01`` and ``BF01`` are one person photographed in two
sessions, so folds never split them. ``sequence_id`` = the file stem in upper case, ``condition`` = the angle.

By default only the straight view ``S`` is taken (``kdef_angles``: a list or a comma-separated text of angles,
e.g. ``S,HL,HR``); images of the other views are counted in one note, not listed. Report rows, never a traceback:
folders that are not ``[AB][FM]NN``, names that are not KDEF names or do not match their folder, unknown
expression or angle codes, non-image files, system files, nested folders.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.scan_common import (
    ScanReport,
    class_set_name,
    entries,
    image_row,
    is_ignored_dir,
    is_system_file,
    require_root,
    resolve_classes,
    stray_reason,
)

DATASET = "kdef"

KDEF_CODES: dict[str, str] = {
    "AF": "fear",
    "AN": "anger",
    "DI": "disgust",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}
"""KDEF's expression codes -> canonical class names."""

ANGLES: tuple[str, ...] = ("FL", "HL", "S", "HR", "FR")
"""KDEF's views, left to right."""

DEFAULT_ANGLES = "S"

PERSON_FOLDER = re.compile(r"^[AB][FM]\d{2}$", re.IGNORECASE)
KDEF_NAME = re.compile(r"^(?P<person>[AB][FM]\d{2})(?P<code>[A-Z]{2})(?P<angle>[A-Z]{1,2})$")
"""A KDEF file stem in upper case: ``AF01ANS``, ``BM35HAHL``."""


def parse_angles(angles: str | list[str]) -> list[str]:
    """``"S,HL"`` or ``["S", "HL"]`` -> the angles in :data:`ANGLES` order; :class:`ManifestError` for an unknown
    or missing one."""
    items = angles.split(",") if isinstance(angles, str) else list(angles)
    chosen = {str(a).strip().upper() for a in items if str(a).strip()}
    unknown = sorted(chosen - set(ANGLES))
    if unknown or not chosen:
        raise ManifestError(
            f"KDEF angles {angles!r}: "
            + (f"unknown {', '.join(unknown)}" if unknown else "none given")
            + f"; known: {', '.join(ANGLES)} (e.g. S,HL,HR)"
        )
    return [a for a in ANGLES if a in chosen]


def scan_kdef(
    root: Path,
    *,
    classes: str | list[str] = "ckplus7",
    kdef_angles: str | list[str] = DEFAULT_ANGLES,
    **_other_format_options: object,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan a KDEF root (see the module docstring) into manifest rows and a report.

    Raises :class:`ManifestError` for a missing root, unknown angles, or a root without a person folder holding a
    KDEF image of a chosen view."""
    root = require_root(root)
    angles = parse_angles(kdef_angles)
    class_list = resolve_classes(classes)
    report = ScanReport(classes=class_list, dataset=DATASET, root=str(root))
    rows: list[dict] = []
    left_out: Counter[str] = Counter()
    others: list[str] = []
    seen: dict[str, str] = {}
    for entry in entries(root, report):
        if entry.is_dir() and PERSON_FOLDER.match(entry.name):
            if report.claim(entry):
                rows.extend(
                    _scan_person(entry.path, entry.name.upper(), angles, class_list, classes, report, left_out, seen)
                )
            continue
        if is_system_file(entry.name):
            report.skip(entry.path, "system file")
        elif entry.is_dir() and is_ignored_dir(entry.name):
            report.skip(entry.path, "hidden or system folder")
        elif entry.is_dir():
            others.append(entry.name)
            report.skip(entry.path, f"not a KDEF person folder: {entry.name!r} (expected e.g. AF01)")
        else:
            report.skip(entry.path, "file outside a person folder")
    if left_out:
        counts = ", ".join(f"{a} {left_out[a]}" for a in ANGLES if a in left_out)
        report.note(root, f"views left out (kdef_angles {','.join(angles)}): {counts} images")
    if not rows:
        hint = f"; it holds folders ({', '.join(others[:5])}): point ROOT at the folder of AF01 ..." if others else ""
        raise ManifestError(f"{root}: no KDEF image of the views {','.join(angles)} (e.g. AF01/AF01ANS.JPG){hint}")
    return pd.DataFrame(rows), report


def _scan_person(
    folder: str,
    person: str,
    angles: list[str],
    class_list: list[str],
    classes: str | list[str],
    report: ScanReport,
    left_out: Counter[str],
    seen: dict[str, str],
) -> list[dict]:
    """The rows of one person-session folder (one ``os.scandir``); views not chosen counted in ``left_out``."""
    rows: list[dict] = []
    for item in entries(folder, report):
        reason = stray_reason(item, "a person folder")
        if reason is not None:
            report.skip(item.path, reason)
            continue
        stem = os.path.splitext(item.name)[0]
        m = KDEF_NAME.match(stem.upper())
        if m is None:
            report.skip(item.path, "not a KDEF name: expected e.g. AF01ANS.JPG (session, gender, id, code, angle)")
            continue
        if m["person"] != person:
            report.skip(item.path, f"name does not match its folder: {m['person']} in folder {person}")
            continue
        code, angle = m["code"], m["angle"]
        if code not in KDEF_CODES:
            report.skip(item.path, f"unknown expression code: {code!r} (KDEF codes: {' '.join(KDEF_CODES)})")
            continue
        if angle not in ANGLES:
            report.skip(item.path, f"unknown angle: {angle!r} (KDEF angles: {' '.join(ANGLES)})")
            continue
        if angle not in angles:
            left_out[angle] += 1
            continue
        seq_id = stem.upper()
        if seq_id in seen:
            report.skip(item.path, f"duplicate: image {seq_id} is already taken from {seen[seq_id]}")
            continue
        if not report.claim(item):
            continue
        seen[seq_id] = item.path
        rows.append(
            image_row(
                sequence_id=seq_id,
                dataset=DATASET,
                subject=person[1:],
                canon=KDEF_CODES[code],
                classes=class_list,
                set_name=class_set_name(classes),
                path=item.path,
                condition=angle,
            )
        )
    return rows
