"""Folder scanner: a directory (searched recursively) of videos (.mp4 .avi .mov .mkv .webm) and frame folders
(a folder holding .png/.jpg/.jpeg/.bmp/.tif/.tiff files), optionally with a labels CSV ``path, subject, label``.

Choices, for the record:

- CSV ``path`` is relative to the CSV's folder or absolute; it may name a video, a frame folder or one image
  (a one-frame sequence). Headers and values are stripped; ``label`` is a class name, case-insensitive
  (common spellings such as "happiness" or "sad" accepted), or empty for unlabelled; ``subject`` empty -> the
  file stem.
- A CSV row whose file is missing (or is not a video / image / frame folder) is reported and skipped; an
  unknown label keeps the row unlabelled and is reported; a repeated path keeps the first row.
- Videos and frame folders on disk that the CSV does not name are included unlabelled (subject = stem,
  ``label_note`` "not in labels CSV") and listed in the report's notes.
- Without a CSV every video / frame folder is unlabelled, subject = its stem.
- Images lying beside videos in one folder are stills, not frames: each is a one-frame sequence.
- ``sequence_id`` = path relative to the root without extension, ``/`` -> ``__`` (relative to the CSV's folder
  for a CSV path outside the root; the root's own name when the root itself is the frame folder).
- Videos have ``n_frames`` 0 and ``peak_index`` null until decoded; frame folders peak at their last frame.
- Links are followed; each real folder, video or image counts once (the first path in natural order wins), and
  broken links, link loops and names that are not valid UTF-8 are reported (see
  :func:`data_manifests.scan_common.entries`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.scan_common import (
    VIDEO_EXTS,
    ScanReport,
    canonical_class,
    class_set_name,
    entries,
    is_ignored_dir,
    is_image,
    is_system_file,
    is_video,
    label_in_set,
    note_missing_frames,
    order_frames,
    read_small_csv,
    require_root,
    resolve_classes,
    sequence_row,
)
from data_manifests.walk import list_dir


def discover(root: Path, report: ScanReport, ignore: frozenset[Path] | set[Path] = frozenset()) -> dict[Path, str]:
    """Videos and frame folders under ``root`` -> 'video' | 'frames', in natural path order (folders first
    listed, then descended into, as ``os.walk`` does). Links are followed; each real folder and video counts once
    (see :func:`data_manifests.scan_common.entries`). ``ignore``: real paths to leave out (the labels CSV).

    A folder whose images sit beside videos is not a frame folder: each of its images becomes a one-frame
    sequence (keyed by the image's path), and the report notes it."""
    found: dict[Path, str] = {}
    _discover_in(root, report, {Path(p) for p in ignore}, found)
    return found


def _discover_in(here: Path, report: ScanReport, ignore: set[Path], found: dict[Path, str]) -> None:
    items = entries(here, report)
    files = [e for e in items if e.is_file()]
    images = [f for f in files if is_image(f.name)]
    mixed = bool(images) and any(is_video(f.name) for f in files)
    if images and not mixed:
        found[here] = "frames"
    if mixed:
        report.note(here, f"images beside videos: {len(images)} images taken as one-frame sequences")
    for f in files:
        path = here / f.name
        if Path(f.real) in ignore:
            continue
        if is_system_file(f.name):
            report.skip(path, "system file")
        elif is_video(f.name) or (mixed and is_image(f.name)):
            if report.claim(f):
                found[path] = "video" if is_video(f.name) else "frames"
        elif not is_image(f.name):
            report.skip(path, "ignored file (not a video or image)")
    for e in items:
        if not e.is_dir() and not e.is_file():
            report.skip(e.path, "neither a file nor a folder")
        elif e.is_dir() and not is_ignored_dir(e.name) and report.claim(e):
            _discover_in(here / e.name, report, ignore, found)


def _frames_of(folder: Path, report: ScanReport) -> list[str]:
    """The frame files of a frame folder in temporal order, each real file once per scan."""
    names = [e.name for e in entries(folder, report) if e.is_file() and is_image(e.name) and report.claim(e)]
    names, numbers = order_frames(names)
    if numbers is not None:
        note_missing_frames(folder, numbers, report)
    return [str(folder / n) for n in names]


def _sequence_id(path: Path, kind: str, root: Path, csv_dir: Path | None) -> str:
    for base in (root, csv_dir):
        if base is None:
            continue
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        if rel == Path("."):
            return path.name
        rel = rel if kind == "frames" and path.is_dir() else rel.with_suffix("")
        return rel.as_posix().replace("/", "__")
    return path.stem


def _row(
    path: Path,
    kind: str,
    subject: str,
    label: str | None,
    note: str | None,
    root: Path,
    csv_dir: Path | None,
    report: ScanReport,
) -> dict | None:
    """One manifest row, or None (reported) for a frame folder whose every image was already taken."""
    sid = _sequence_id(path, kind, root, csv_dir)
    common = dict(sequence_id=sid, dataset="folder", subject=subject, label=label, label_note=note)
    if kind == "video":
        return sequence_row(**common, video_path=str(path))
    frames = [str(path)] if path.is_file() else _frames_of(path, report)
    if not frames:
        report.skip(path, "no frames left: its images are duplicates of files already taken")
        return None
    return sequence_row(**common, frame_paths=frames, peak_index=len(frames) - 1)


def read_labels_csv(path: Path) -> pd.DataFrame:
    """The labels CSV with stripped, lower-case headers and stripped string values; columns path, subject,
    label (subject and label default to empty). Raises :class:`ManifestError` naming the file."""
    table = read_small_csv(path, "labels CSV")
    if "path" not in table.columns:
        raise ManifestError(
            f"{path}: labels CSV needs a 'path' column (and 'subject', 'label'); found: {', '.join(table.columns)}"
        )
    for col in ("subject", "label"):
        if col not in table.columns:
            table[col] = ""
    return table[["path", "subject", "label"]].apply(lambda s: s.str.strip())


def scan_folder(
    root: Path,
    *,
    classes: str | list[str] = "ckplus7",
    labels_csv: Path | None = None,
    **_other_format_options,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan a folder of videos / frame folders, labelled by an optional CSV (see module docstring)."""
    root = require_root(root)
    class_list = resolve_classes(classes)
    set_name = class_set_name(classes)
    report = ScanReport(classes=class_list, dataset="folder", root=str(root))
    csv_path = Path(labels_csv).expanduser().resolve() if labels_csv is not None else None
    table = read_labels_csv(csv_path) if csv_path is not None else None
    on_disk = discover(root, report, ignore={csv_path} if csv_path else set())
    rows: list[dict] = []
    covered: set[Path] = set()
    if table is not None:
        csv_dir = csv_path.parent
        for i, rec in enumerate(table.itertuples(index=False)):
            where = f"{csv_path}:{i + 2}"
            if not rec.path:
                report.skip(where, "bad labels CSV row: empty path")
                continue
            target = Path(rec.path).expanduser()
            target = (target if target.is_absolute() else csv_dir / target).resolve()
            kind = _kind(target)
            if kind is None:
                why = "missing file" if not target.exists() else "not a video, image or frame folder"
                report.skip(target, f"bad labels CSV row: {why} ({where})")
                continue
            if target in covered:
                report.skip(where, f"bad labels CSV row: repeated path {rec.path}")
                continue
            covered.add(target)
            if kind == "frames" and target.is_file():
                covered.add(target.parent)
            label, note = _label(rec.label, class_list, set_name, where, report)
            subject = rec.subject or _stem(target)
            if not rec.subject:
                report.note(where, "empty subject: file stem used")
            row = _row(target, kind, subject, label, note, root, csv_dir, report)
            if row is not None:
                rows.append(row)
    for path, kind in on_disk.items():
        if path in covered or Path(os.path.realpath(path)) in covered:
            continue
        note = "not in labels CSV" if table is not None else "no labels CSV"
        if table is not None:
            report.note(path, "not in labels CSV: included unlabelled")
        row = _row(path, kind, _stem(path), None, note, root, csv_path.parent if csv_path else None, report)
        if row is not None:
            rows.append(row)
    if not rows:
        raise ManifestError(
            f"{root}: no videos ({', '.join(sorted(e[1:] for e in VIDEO_EXTS))}) or frame folders found"
            + (f" and no usable rows in {csv_path}" if csv_path else "")
        )
    _disambiguate(rows, report)
    df = pd.DataFrame(rows).sort_values("sequence_id", kind="stable").reset_index(drop=True)
    return df, report


def _disambiguate(rows: list[dict], report: ScanReport) -> None:
    """Files whose ids collide once the extension is dropped (``a.jpg``, ``a.mp4``) keep their extension."""
    count = Counter(r["sequence_id"] for r in rows)
    for r in rows:
        if count[r["sequence_id"]] < 2:
            continue
        source = Path(r["video_path"] or r["frame_paths"][0])
        if r["video_path"] or (r["n_frames"] == 1 and source.suffix):
            report.note(source, f"same name as another file: sequence_id {r['sequence_id']}{source.suffix}")
            r["sequence_id"] += source.suffix


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _kind(path: Path) -> str | None:
    if path.is_dir():
        return "frames" if any(e.is_file() and is_image(e.name) for e in list_dir(path)) else None
    if path.is_file():
        if is_video(path.name):
            return "video"
        if is_image(path.name):
            return "frames"
    return None


def _label(text: str, classes: list[str], set_name: str, where: str, report: ScanReport):
    if not text:
        return None, "empty label in labels CSV"
    canon = canonical_class(text)
    if canon is None:
        report.skip(where, f"unreadable label: unknown class {text!r}")
        return None, f"unknown label: {text!r}"
    return label_in_set(canon, classes, set_name)
