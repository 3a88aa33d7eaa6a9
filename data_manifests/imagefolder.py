"""Class-folder scanner (the ImageFolder convention): ``ROOT/<class>/<image>``, as CK+48, JAFFE, KDEF and folder
exports of FER2013 / RAF-DB ship.

Subject, sequence and frame order come from each file's stem through a regular expression with named groups
(``ImageFolderConfig.pattern``):

- ``subject`` (required): the subject id, which folds never split;
- ``sequence`` (optional): images of one subject with the same sequence value **in the same class folder** form
  one sequence; without the group every image is its own one-frame sequence;
- ``frame`` (optional): the frame number that orders a sequence's images (digits, compared as numbers);
  without it a sequence's images are in natural name order.

The default pattern fits CK+ names (``S010_004_00000017`` = subject S010, sequence 004, frame 17), so CK+48 as
it ships scans into its 327 three-frame sequences. ``sequence_id`` = ``<subject>_<sequence>`` (``<stem>`` when
the pattern has no sequence group); when one id occurs in two class folders, the class is appended
(``..._<class>``) so ids stay unique, and the report notes it.

Choices, for the record: the class folder name is the label (case-insensitive, aliases such as ``happiness``
or ``angry`` accepted); a class folder outside the configured class set keeps its sequences unlabelled with a
note; a folder that names no known class is reported and skipped. A file whose stem does not match the
pattern is reported and skipped, like a stray file. Images directly in ROOT, nested folders, system files and
non-image files are reported and skipped. The peak is a sequence's last frame (CK+48 holds the last three
frames up to the apex). A class folder or image reached twice (a link or alias such as ``Disgusted -> disgust``)
counts once, and broken links, link loops and names that are not valid UTF-8 are reported (see
:func:`data_manifests.scan_common.entries`). A pattern that takes too long to match is refused
(:class:`data_manifests.name_pattern.NamePattern`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.name_pattern import CKPLUS_NAME_PATTERN, NamePattern
from data_manifests.scan_common import (
    ScanReport,
    canonical_class,
    class_set_name,
    entries,
    is_ignored_dir,
    is_image,
    is_system_file,
    label_in_set,
    natural_key,
    require_root,
    resolve_classes,
    sequence_row,
)

DATASET = "imagefolder"


def _frame_key(groups: dict[str, str | None], name: str) -> tuple:
    frame = groups.get("frame")
    if frame is not None and frame.isdigit():
        return (0, int(frame), natural_key(name))
    return (1, 0, natural_key(name))


def scan_imagefolder(
    root: Path,
    *,
    classes: str | list[str] = "ckplus7",
    name_pattern: str = CKPLUS_NAME_PATTERN,
    **_ignored: object,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan ``ROOT/<class>/<image>`` into manifest rows (folds null) and a report (see the module docstring).

    Raises :class:`ManifestError` for a missing root, an invalid pattern or one that takes too long to match (see
    :class:`~data_manifests.name_pattern.NamePattern`), or a root with no class folder holding a matching image.
    """
    root = require_root(root)
    rx = NamePattern(name_pattern)
    class_list = resolve_classes(classes)
    set_name = class_set_name(classes)
    report = ScanReport(classes=class_list, dataset=DATASET, root=str(root))
    found = _Found()
    for entry in entries(root, report):
        if entry.is_file():
            reason = "system file" if is_system_file(entry.name) else "file outside a class folder"
            report.skip(entry.path, reason)
            continue
        if not entry.is_dir():
            report.skip(entry.path, "neither a file nor a folder")
            continue
        if is_ignored_dir(entry.name):
            report.skip(entry.path, "hidden or system folder")
            continue
        canon = canonical_class(entry.name)
        if canon is None:
            report.skip(entry.path, f"not a class folder: {entry.name!r} names no known class")
            continue
        if not report.claim(entry):
            continue
        found.class_dirs += 1
        label, note = label_in_set(canon, class_list, set_name)
        _scan_class_folder(Path(entry.path), canon, label, note, rx, found, report)
    if not found.groups:
        where = "no class folder" if found.class_dirs == 0 else "no image whose name matches the pattern"
        raise ManifestError(f"{root}: not a class-folder dataset ({where}; pattern {name_pattern})")
    return pd.DataFrame(_rows(found, report)), report


@dataclass
class _Found:
    """What the scan found: images per (sequence, class folder) with their sort keys, and each such key's
    subject, label and label note; how many class folders it read."""

    groups: dict[tuple[str, str], list[tuple[tuple, str]]] = field(default_factory=lambda: defaultdict(list))
    info: dict[tuple[str, str], tuple[str, str | None, str | None]] = field(default_factory=dict)
    class_dirs: int = 0


def _scan_class_folder(
    folder: Path,
    canon: str,
    label: str | None,
    note: str | None,
    rx: NamePattern,
    found: _Found,
    report: ScanReport,
) -> None:
    """Add the images of one class folder to ``found``; report what is not an image matching the pattern, and
    images already taken through another path (a link or alias)."""
    for item in entries(folder, report):
        path = Path(item.path)
        if is_system_file(item.name):
            report.skip(path, "system file")
            continue
        if item.is_dir():
            report.skip(path, "folder inside a class folder")
            continue
        if not item.is_file() or not is_image(item.name):
            report.skip(path, "not an image file")
            continue
        groups, why = rx.fields(path.stem)
        if groups is None:
            report.skip(path, why or "name does not match the pattern")
            continue
        if not report.claim(item):
            continue
        subject = str(groups["subject"])
        seq = f"{subject}_{groups['sequence']}" if rx.has_sequence else path.stem
        key = (seq, canon)
        found.groups[key].append((_frame_key(groups, item.name), str(path)))
        found.info[key] = (subject, label, note)


def _rows(found: _Found, report: ScanReport) -> list[dict]:
    """One manifest row per (sequence, class folder) in natural order; an id found in several class folders gets
    the class appended (noted in the report)."""
    per_id = defaultdict(list)
    for seq, canon in found.groups:
        per_id[seq].append(canon)
    rows = []
    for (seq, canon), items in sorted(found.groups.items(), key=lambda kv: natural_key(f"{kv[0][0]}/{kv[0][1]}")):
        seq_id = seq
        if len(per_id[seq]) > 1:
            seq_id = f"{seq}_{canon}"
            folders = ", ".join(sorted(per_id[seq]))
            report.note(seq_id, f"sequence {seq} lies in class folders {folders}: id made unique")
        subject, label, note = found.info[(seq, canon)]
        frames = [p for _, p in sorted(items)]
        rows.append(
            sequence_row(
                sequence_id=seq_id,
                dataset=DATASET,
                subject=subject,
                label=label,
                label_note=note,
                frame_paths=frames,
                peak_index=len(frames) - 1,
            )
        )
    return rows
