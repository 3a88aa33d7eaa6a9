"""Oulu-CASIA NIR&VIS scanner: ``<tree>/{VL,NI}/{Strong,Weak,Dark}/Pxxx/<Class>/NNN.jpeg`` or, where a copy
has videos, ``<tree>/{VL,NI}/{Strong,Weak,Dark}/Pxxx/<Class>.avi`` (any video extension).

``<tree>`` is found by looking for a system folder (``VL``/``NI``) in the root, one or two folders down
(``OriginalImg``, ``OriginalVideo``, a cropped copy ...). Several trees: the one named ``OriginalImg`` wins,
else the only frame tree, else :class:`ManifestError` asking for a narrower root. Choices, for the record:

- folder names match case-insensitively; class folders map Anger, Disgust, Fear, Happiness, Sadness, Surprise
  to anger, disgust, fear, happy, sadness, surprise; any other class folder or file is reported and skipped;
- a video row has ``n_frames`` 0 and ``peak_index`` null: unknown until decoded (the decode stage fills them);
  a frame row's ``peak_index`` is the last frame (sequences run neutral -> peak);
- a class with both a frame folder and a video keeps the frames; the video is reported;
- a subject, class folder, video or frame reached twice (a link or alias) counts once, and broken links, link
  loops and names that are not valid UTF-8 are reported (see :func:`data_manifests.scan_common.entries`).
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
    is_ignored_dir,
    is_system_file,
    is_video,
    label_in_set,
    note_missing_frames,
    order_frames,
    require_root,
    resolve_classes,
    sequence_frame_names,
    sequence_row,
)
from data_manifests.walk import list_dir

SYSTEMS: tuple[str, ...] = ("VL", "NI")
ILLUMINATIONS: tuple[str, ...] = ("Strong", "Weak", "Dark")
CLASS_FOLDERS: dict[str, str] = {
    "Anger": "anger",
    "Disgust": "disgust",
    "Fear": "fear",
    "Happiness": "happy",
    "Sadness": "sadness",
    "Surprise": "surprise",
}
_CLASS_BY_LOWER = {k.lower(): k for k in CLASS_FOLDERS}
PREFERRED_TREE = "originalimg"


def _select(value: str, known: tuple[str, ...], what: str) -> list[str]:
    if value.lower() == "all":
        return list(known)
    for k in known:
        if k.lower() == value.lower():
            return [k]
    raise ManifestError(f"unknown Oulu-CASIA {what} {value!r}; choose one of {', '.join(known)} or 'all'")


def _subdirs(path: Path) -> dict[str, Path]:
    """Sub-folders by lower-case name."""
    return {e.name.lower(): Path(e.path) for e in list_dir(path) if e.is_dir() and not is_ignored_dir(e.name)}


def _has_system(path: Path) -> bool:
    return any(s.lower() in _subdirs(path) for s in SYSTEMS)


def _tree_has_frames(tree: Path) -> bool:
    """True when the first class entry found under the tree is a folder (frames), False for a video."""
    for system in _subdirs(tree).values():
        for illum in _subdirs(system).values():
            for subj in _subdirs(illum).values():
                for e in list_dir(subj):
                    if e.is_dir() and e.name.lower() in _CLASS_BY_LOWER:
                        return True
                    if is_video(e.name):
                        return False
    return False


def find_oulu_tree(root: Path, report: ScanReport) -> Path:
    """The folder holding ``VL``/``NI``: the root itself, or up to two folders down (see module docstring)."""
    if _has_system(root):
        return root
    level1 = list(_subdirs(root).values())
    trees = [d for d in level1 if _has_system(d)]
    if not trees:
        trees = [d2 for d in level1 for d2 in _subdirs(d).values() if _has_system(d2)]
    if not trees:
        raise ManifestError(
            f"{root}: no Oulu-CASIA layout found (expected OriginalImg/VL/Strong/P001/Anger/000.jpeg or "
            "OriginalVideo/VL/Strong/P001/Anger.avi: a VL/ or NI/ folder in the root or up to two folders "
            "down)"
        )
    if len(trees) == 1:
        chosen = trees[0]
    else:
        named = [t for t in trees if t.name.lower() == PREFERRED_TREE]
        frames = [t for t in trees if _tree_has_frames(t)]
        if named:
            chosen = named[0]
        elif len(frames) == 1:
            chosen = frames[0]
        else:
            raise ManifestError(
                f"{root}: several Oulu-CASIA trees ({', '.join(str(t) for t in trees)}); point ROOT at the one to use"
            )
        for t in trees:
            if t != chosen:
                report.note(t, f"layout: other Oulu-CASIA tree ignored (using {chosen.name}/)")
    if chosen != root:
        report.note(chosen, "layout: using this Oulu-CASIA tree")
    return chosen


def scan_oulu(
    root: Path,
    *,
    classes: str | list[str] = "ckplus7",
    oulu_system: str = "VL",
    oulu_illumination: str = "Strong",
    **_other_format_options,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan an Oulu-CASIA root for the chosen system(s) and illumination(s) ('all' for every one)."""
    root = require_root(root)
    class_list = resolve_classes(classes)
    set_name = class_set_name(classes)
    systems = _select(oulu_system, SYSTEMS, "system")
    illums = _select(oulu_illumination, ILLUMINATIONS, "illumination")
    report = ScanReport(classes=class_list, dataset="oulu", root=str(root))
    tree = find_oulu_tree(root, report)
    rows: list[dict] = []
    available: list[str] = []
    for system in systems:
        sys_dir = _subdirs(tree).get(system.lower())
        if sys_dir is None:
            continue
        for illum in illums:
            ill_dir = _subdirs(sys_dir).get(illum.lower())
            if ill_dir is None:
                continue
            available.append(f"{system}/{illum}")
            for subj in entries(ill_dir, report):
                if not subj.is_dir():
                    report.skip(subj.path, "system file" if is_system_file(subj.name) else "stray file")
                    continue
                if not is_ignored_dir(subj.name) and report.claim(subj):
                    rows += _scan_subject(Path(subj.path), subj.name, system, illum, class_list, set_name, report)
    if not available:
        present = [f"{s.name}/{i.name}" for s in _subdirs(tree).values() for i in _subdirs(s).values()]
        raise ManifestError(
            f"{tree}: no {'/'.join(systems)} x {'/'.join(illums)} folders; present: {', '.join(present) or 'none'}"
        )
    if not rows:
        raise ManifestError(f"{tree}: no sequences found under {', '.join(available)}")
    df = pd.DataFrame(rows).sort_values("sequence_id", kind="stable").reset_index(drop=True)
    return df, report


def _scan_subject(
    subj_dir: Path,
    subject: str,
    system: str,
    illum: str,
    classes: list[str],
    set_name: str,
    report: ScanReport,
) -> list[dict]:
    frames: dict[str, Path] = {}
    videos: dict[str, Path] = {}
    for e in entries(subj_dir, report):
        if is_system_file(e.name):
            report.skip(e.path, "system file")
            continue
        if e.is_dir():
            if not is_ignored_dir(e.name):
                _take(e, _CLASS_BY_LOWER.get(e.name.lower()), frames, "folder", report)
        elif e.is_file() and is_video(e.name):
            _take(e, _CLASS_BY_LOWER.get(Path(e.name).stem.lower()), videos, "video", report)
        else:
            report.skip(e.path, "stray file")
    rows = []
    for key in sorted(set(frames) | set(videos)):
        label, note = label_in_set(CLASS_FOLDERS[key], classes, set_name)
        common = dict(
            sequence_id=f"{system}_{illum}_{subject}_{key}",
            dataset="oulu",
            subject=subject,
            label=label,
            label_note=note,
            condition=f"{system}/{illum}",
        )
        names = _frame_names(frames[key], report) if key in frames else []
        if key in frames and not names:
            report.skip(frames[key], "empty sequence folder")
        if names:
            if key in videos:
                report.skip(videos[key], "video beside a frame folder for the same class: frames used")
            rows.append(
                sequence_row(**common, frame_paths=[str(frames[key] / n) for n in names], peak_index=len(names) - 1)
            )
        elif key in videos:
            rows.append(sequence_row(**common, video_path=str(videos[key])))
    return rows


def _take(e: Entry, key: str | None, taken: dict[str, Path], what: str, report: ScanReport) -> None:
    """Put a class folder or video (``what``) into ``taken`` under its class ``key``; report an unknown class, a
    second path to a file already taken (see :meth:`ScanReport.claim`) and a second one for one class."""
    if key is None:
        report.skip(e.path, f"unknown class {what}")
    elif report.claim(e):
        if key in taken:
            report.skip(e.path, f"second {what} for one class: {key}")
        else:
            taken[key] = Path(e.path)


def _frame_names(seq_dir: Path, report: ScanReport) -> list[str]:
    names = sequence_frame_names(seq_dir, report)
    names, numbers = order_frames(names)
    if numbers is not None:
        note_missing_frames(seq_dir, numbers, report)
    return names
