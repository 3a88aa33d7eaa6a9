"""CK+ scanner: ``cohn-kanade-images/Sxxx/nnn/*.png`` + ``Emotion/Sxxx/nnn/*_emotion.txt`` (+ ``Landmarks/``).

Each tree is looked for in the root and, failing that, one folder down (a zip extracted into its own folder);
the report notes which folder it used. Choices, for the record:

- a sequence without an emotion file is kept, unlabelled (``label_note`` "no emotion file");
- an unreadable, empty, non-numeric or out-of-range emotion file leaves its sequence unlabelled and is listed
  in ``ScanReport.skipped`` with the file's path;
- a sequence with gaps in its frame numbering is kept with the frames it has; the gap goes to
  ``ScanReport.notes`` as "missing frames N..M" (CK+ numbers frames from 1);
- ``peak_index`` is the index of the frame whose number the emotion file names (normally the last); without
  one, the last frame (CK+ sequences end at the peak);
- a subject, sequence folder or frame reached twice (a link or alias) counts once, and broken links, link loops
  and names that are not valid UTF-8 are reported (see :func:`data_manifests.scan_common.entries`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.scan_common import (
    Entry,
    ScanReport,
    class_set_name,
    entries,
    format_gaps,
    is_ignored_dir,
    is_system_file,
    label_in_set,
    note_missing_frames,
    order_frames,
    require_root,
    resolve_classes,
    sequence_frame_names,
    sequence_row,
    trailing_number,
)
from data_manifests.schema import CKPLUS_CODES
from data_manifests.walk import list_dir

IMAGES_TREE = "cohn-kanade-images"
EMOTION_TREE = "Emotion"
LANDMARKS_TREE = "Landmarks"
FACS_TREE = "FACS"
EMOTION_SUFFIX = "_emotion"
LANDMARKS_SUFFIX = "_landmarks"


def find_tree(root: Path, name: str, report: ScanReport) -> Path | None:
    """``root/name`` or ``root/<one folder>/name`` (case-insensitive); None when absent.

    Raises :class:`ManifestError` when several folders one level down hold it."""
    direct = [e for e in list_dir(root) if e.is_dir() and e.name.lower() == name.lower()]
    if direct:
        return Path(direct[0].path)
    found = []
    for sub in list_dir(root):
        if not sub.is_dir() or is_ignored_dir(sub.name):
            continue
        found += [Path(e.path) for e in list_dir(Path(sub.path)) if e.is_dir() and e.name.lower() == name.lower()]
    if len(found) > 1:
        raise ManifestError(
            f"{root}: several {name}/ folders one level down ({', '.join(map(str, found))}); "
            "point ROOT at the one to use"
        )
    if found:
        report.note(found[0], f"layout: using {name}/ found one level below the root")
        return found[0]
    return None


def read_emotion_code(path: Path) -> tuple[int | None, str | None]:
    """(CK+ code, None) or (None, reason) for an emotion file holding one float like ``3.0000000e+00``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "unreadable label file: not text (binary or not UTF-8)"
    except OSError as exc:
        return None, f"unreadable label file: {exc.strerror or type(exc).__name__}"
    text = text.strip()
    if not text:
        return None, "unreadable label file: empty"
    try:
        value = float(text.split()[0])
    except ValueError:
        return None, f"unreadable label file: not a number ({text[:20]!r})"
    if len(text.split()) > 1:
        return None, f"unreadable label file: several values ({text[:40]!r})"
    if value != value or value != round(value):  # NaN or not integral
        return None, f"unreadable label file: {value} is not an integer code"
    code = int(round(value))
    if code not in CKPLUS_CODES:
        return None, f"unreadable label file: code {code} out of range 0..{max(CKPLUS_CODES)}"
    return code, None


def _emotion_for(emotion_dir: Path | None, report: ScanReport) -> tuple[int | None, int | None, str | None]:
    """(code, frame number named by the file, note) for one sequence's emotion folder."""
    if emotion_dir is None or not emotion_dir.is_dir():
        return None, None, "no emotion file"
    files = []
    for e in list_dir(emotion_dir):
        if e.is_file() and e.name.lower().endswith(EMOTION_SUFFIX + ".txt") and not is_system_file(e.name):
            files.append(Path(e.path))
        elif is_system_file(e.name):
            report.skip(e.path, "system file")
        else:
            report.skip(e.path, "stray file in Emotion tree")
    if not files:
        return None, None, "no emotion file"
    if len(files) > 1:
        for f in files:
            report.skip(f, "unreadable label file: several emotion files for one sequence")
        return None, None, "several emotion files"
    code, why = read_emotion_code(files[0])
    if why is not None:
        report.skip(files[0], why)
        return None, None, why
    frame_no = trailing_number(files[0].name[: -len(EMOTION_SUFFIX + ".txt")])
    return code, frame_no, None


def scan_ckplus(
    root: Path, *, classes: str | list[str] = "ckplus7", **_other_format_options
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan a CK+ root into manifest rows (one per sequence folder), sorted by ``sequence_id``."""
    root = require_root(root)
    class_list = resolve_classes(classes)
    report = ScanReport(classes=class_list, dataset="ckplus", root=str(root))
    images = find_tree(root, IMAGES_TREE, report)
    emotion = find_tree(root, EMOTION_TREE, report)
    if images is None or emotion is None:
        missing = " and ".join(n + "/" for n, t in ((IMAGES_TREE, images), (EMOTION_TREE, emotion)) if t is None)
        raise ManifestError(
            f"{root}: no CK+ layout found (expected {IMAGES_TREE}/ and {EMOTION_TREE}/ in the root or one "
            f"folder down; missing {missing}). For unlabelled image folders use --format folder."
        )
    landmarks = find_tree(root, LANDMARKS_TREE, report)
    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for subj, seq in _sequence_folders(images, report):
        seen.add((subj.name, seq.name))
        row = _scan_sequence(
            Path(seq.path), subj.name, seq.name, emotion, landmarks, class_list, class_set_name(classes), report
        )
        if row is not None:
            rows.append(row)
    _report_orphan_labels(emotion, seen, report)
    df = pd.DataFrame(rows) if rows else None
    if df is None:
        raise ManifestError(f"{images}: no sequence folders with frames found (expected Sxxx/nnn/*.png)")
    return df.sort_values("sequence_id", kind="stable").reset_index(drop=True), report


def _sequence_folders(images: Path, report: ScanReport) -> list[tuple[Entry, Entry]]:
    """(subject folder, sequence folder) pairs of the image tree in natural order, each real folder once; stray
    files are reported."""
    pairs = []
    for subj in entries(images, report):
        if not subj.is_dir():
            report.skip(subj.path, "system file" if is_system_file(subj.name) else "stray file in image tree")
            continue
        if is_ignored_dir(subj.name) or not report.claim(subj):
            continue
        for seq in entries(Path(subj.path), report):
            if not seq.is_dir():
                report.skip(seq.path, "system file" if is_system_file(seq.name) else "stray file in image tree")
                continue
            if not is_ignored_dir(seq.name) and report.claim(seq):
                pairs.append((subj, seq))
    return pairs


def _scan_sequence(
    seq_dir: Path,
    subject: str,
    seq: str,
    emotion: Path,
    landmarks: Path | None,
    classes: list[str],
    set_name: str,
    report: ScanReport,
) -> dict | None:
    names = sequence_frame_names(seq_dir, report)
    if not names:
        report.skip(seq_dir, "empty sequence folder")
        return None
    names, numbers = order_frames(names)
    if numbers is None:
        report.note(seq_dir, "frame names without numbers: natural sort order used")
    else:
        dups = sorted({n for n in numbers if numbers.count(n) > 1})
        if dups:
            report.note(seq_dir, f"duplicate frame numbers: {format_gaps([(d, d) for d in dups])}")
        note_missing_frames(seq_dir, numbers, report, first_expected=1)
    code, peak_no, note = _emotion_for(emotion / subject / seq, report)
    label = None
    if code is not None:
        label, note = label_in_set(CKPLUS_CODES[code], classes, set_name)
    peak = len(names) - 1
    if peak_no is not None and numbers is not None:
        if peak_no in numbers:
            peak = numbers.index(peak_no)
        else:
            report.note(seq_dir, f"peak frame missing: emotion file names frame {peak_no}; peak set to the last frame")
    landmark_paths = None
    if landmarks is not None:
        lm_dir = landmarks / subject / seq
        have = {e.name for e in list_dir(lm_dir) if e.is_file()} if lm_dir.is_dir() else set()
        landmark_paths = [
            str(lm_dir / f"{Path(n).stem}{LANDMARKS_SUFFIX}.txt")
            if f"{Path(n).stem}{LANDMARKS_SUFFIX}.txt" in have
            else ""
            for n in names
        ]
    return sequence_row(
        sequence_id=f"{subject}_{seq}",
        dataset="ckplus",
        subject=subject,
        label=label,
        label_note=note,
        frame_paths=[str(seq_dir / n) for n in names],
        landmark_paths=landmark_paths,
        peak_index=peak,
    )


def _report_orphan_labels(emotion: Path, seen: set[tuple[str, str]], report: ScanReport) -> None:
    """Emotion folders whose sequence has no image folder."""
    for subj in list_dir(emotion):
        if not subj.is_dir() or is_ignored_dir(subj.name):
            continue
        for seq in list_dir(Path(subj.path)):
            if seq.is_dir() and not is_ignored_dir(seq.name) and (subj.name, seq.name) not in seen:
                report.skip(seq.path, "label without images: no cohn-kanade-images folder for this sequence")
