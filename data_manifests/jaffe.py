"""JAFFE scanner: one flat folder of ``KA.AN1.39.tiff`` files -> one-frame sequences, subject from the name.

A JAFFE name is ``<subject>.<code><sample>.<image id>.<ext>``: ``KA.AN1.39.tiff`` = subject ``KA``, expression
``AN`` (anger), first sample of it, image 39. Codes: ``AN DI FE HA NE SA SU`` (anger, disgust, fear, happy,
neutral, sadness, surprise); compared case-insensitively. ``sequence_id`` = the file stem (``KA.AN1.39``),
subject = the name's subject in upper case; any image extension is taken (the release ships ``.tiff``).

Report rows, never a traceback: a name that is not a JAFFE name, an unknown expression code, non-image files,
system files and folders (the release is flat). Folds are subject-independent as for any dataset (10 subjects).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.scan_common import (
    ScanReport,
    class_set_name,
    entries,
    image_row,
    require_root,
    resolve_classes,
    stray_reason,
)

DATASET = "jaffe"

JAFFE_CODES: dict[str, str] = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}
"""JAFFE's expression codes -> canonical class names."""

JAFFE_NAME = re.compile(r"^(?P<subject>[A-Za-z]+)\.(?P<code>[A-Za-z]+)(?P<sample>\d+)\.(?P<image>\d+)$")
"""A JAFFE file stem: ``KA.AN1.39``."""


def scan_jaffe(
    root: Path, *, classes: str | list[str] = "ckplus7", **_other_format_options: object
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan a JAFFE folder (see the module docstring) into manifest rows, in natural name order, and a report.

    Raises :class:`ManifestError` for a missing root or one holding no image with a JAFFE name."""
    root = require_root(root)
    class_list = resolve_classes(classes)
    set_name = class_set_name(classes)
    report = ScanReport(classes=class_list, dataset=DATASET, root=str(root))
    rows: list[dict] = []
    folders: list[str] = []
    seen: dict[str, str] = {}
    for entry in entries(root, report):
        reason = stray_reason(entry, "the JAFFE folder (it is flat)")
        if reason is not None:
            if entry.is_dir():
                folders.append(entry.name)
            report.skip(entry.path, reason)
            continue
        stem = os.path.splitext(entry.name)[0]
        m = JAFFE_NAME.match(stem)
        if m is None:
            report.skip(entry.path, "not a JAFFE name: expected SUBJECT.CODEn.ID, e.g. KA.AN1.39.tiff")
            continue
        code = m["code"].upper()
        if code not in JAFFE_CODES:
            report.skip(entry.path, f"unknown expression code: {code!r} (JAFFE codes: {' '.join(JAFFE_CODES)})")
            continue
        if stem in seen:
            report.skip(entry.path, f"duplicate: image {stem} is already taken from {seen[stem]}")
            continue
        if not report.claim(entry):
            continue
        seen[stem] = entry.name
        rows.append(
            image_row(
                sequence_id=stem,
                dataset=DATASET,
                subject=m["subject"].upper(),
                canon=JAFFE_CODES[code],
                classes=class_list,
                set_name=set_name,
                path=entry.path,
            )
        )
    if not rows:
        hint = f"; it holds folders ({', '.join(folders[:5])}): point ROOT at the folder of images" if folders else ""
        raise ManifestError(f"{root}: no JAFFE image (files named like KA.AN1.39.tiff){hint}")
    return pd.DataFrame(rows), report
