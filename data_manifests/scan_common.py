"""What every scanner shares: the scan report, class-set resolution, file kinds, frame ordering, row building.

Scanners list files and read small text label files; nothing here opens an image or a video. Folders are listed
through :func:`~data_manifests.walk.entries` and files taken through :meth:`ScanReport.claim`, so that every
scanner follows one rule: each real file or folder counts once (the first path in sorted order wins; a link or
alias to it is reported as a duplicate), and names that are not valid UTF-8, broken links and link loops are
reported, never dropped silently.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_manifests.errors import ManifestError
from data_manifests.schema import CKPLUS_CODES, CLASS_SETS, SPLITS
from data_manifests.walk import Entry, entries, is_valid_name, natural_key, shown

if TYPE_CHECKING:  # pandas is imported where it is used: a prediction worker imports this module for its file
    import pandas as pd  # helpers alone, and pandas is ~0.35 s of its start

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
SYSTEM_DIRS = frozenset({"__macosx"})

CANONICAL_CLASSES: tuple[str, ...] = tuple(CKPLUS_CODES.values())

# Other spellings a user or a dataset may use for a canonical class (lower case).
CLASS_ALIASES: dict[str, str] = {
    "angry": "anger",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sadness",
    "surprised": "surprise",
    "neutrality": "neutral",
}


@dataclass
class ScanReport:
    """What a scan left out or wants the user to know.

    ``skipped``: (path, reason) for files or folders that did not make it into the manifest as they are (stray
    files, empty folders, unreadable label files). ``notes``: (path, message) for things kept but worth a look
    (gaps in frame numbering, the layout folder a scan chose, files absent from a labels CSV). A reason's text
    before its first ``':'`` is its group in :meth:`summary`. Paths are stored as :func:`shown` writes them.
    ``claimed``: real path -> the path that first took it in this scan (see :meth:`claim`); the root is taken
    from the start, so a link back to it is a duplicate.
    """

    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    dataset: str = ""
    root: str = ""
    claimed: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.root:
            self.claimed[os.path.realpath(self.root)] = self.root

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        self.skipped.append((shown(path), reason))

    def note(self, path: str | os.PathLike, message: str) -> None:
        self.notes.append((shown(path), message))

    def claim(self, entry: Entry) -> bool:
        """True when this scan takes ``entry``'s real file or folder for the first time. Otherwise the entry is
        reported as skipped (a duplicate, naming the path that took it first) and False is returned."""
        first = self.claimed.setdefault(entry.real, entry.path)
        if first == entry.path:
            return True
        what = "folder" if entry.is_dir() else "file"
        self.skip(entry.path, f"duplicate: the same {what} as {shown(first)} (a link or alias); counted once")
        return False

    def summary(self, df: pd.DataFrame, max_examples: int = 3) -> str:
        """A terminal-readable account: sequences, subjects, labelled counts per class (and per fold when the
        manifest has folds), unlabelled reasons, skipped items and notes grouped by reason."""
        lines: list[str] = []
        name = self.dataset or (str(df["dataset"].iloc[0]) if len(df) else "manifest")
        n_lab = int(df["labelled"].sum()) if len(df) else 0
        lab = df[df["labelled"]] if len(df) else df
        lines.append(
            f"{name}: {len(df)} sequences from {df['subject'].nunique() if len(df) else 0} subjects"
            + (f" ({self.root})" if self.root else "")
        )
        lines.append(
            f"  labelled: {n_lab} sequences from {lab['subject'].nunique() if n_lab else 0} subjects; "
            f"unlabelled: {len(df) - n_lab}"
        )
        if len(df) - n_lab:
            notes = df.loc[~df["labelled"], "label_note"].fillna("no reason given").str.split(":").str[0]
            for note, count in sorted(Counter(notes).items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    unlabelled, {note}: {count}")
        if len(df) and "source_type" in df and (df["source_type"] == "video").any():
            n_vid = int((df["source_type"] == "video").sum())
            lines.append(f"  videos: {n_vid} (frame counts unknown until decoded)")
        if n_lab:
            classes = self.classes or sorted(lab["label"].unique())
            table = fold_class_table(df, classes)
            by = " and fold:" if "fold 0" in table.index else " and split:" if len(table) > 1 else ":"
            lines.append("  labelled sequences per class" + by)
            lines.extend("    " + row for row in table.to_string().splitlines())
        for title, items in (("skipped", self.skipped), ("notes", self.notes)):
            if not items:
                continue
            lines.append(f"  {title}: {len(items)}")
            groups: dict[str, list[str]] = defaultdict(list)
            for path, reason in items:
                groups[reason.split(":", 1)[0]].append(f"{path} ({reason})" if ":" in reason else path)
            for key, paths in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"    {key}: {len(paths)}")
                for p in paths[:max_examples]:
                    lines.append(f"      {p}")
                if len(paths) > max_examples:
                    lines.append(f"      ... and {len(paths) - max_examples} more")
        return "\n".join(lines)


def fold_class_table(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Labelled sequences per class: one row per fold (``fold 0`` ...) when folds are set, else one per split
    (``train``, ``val``, ``test``) when the dataset has its own, plus ``total``."""
    import pandas as pd

    lab = df[df["labelled"]]
    cols = list(classes) + [c for c in sorted(lab["label"].unique()) if c not in classes]
    rows: dict[str, pd.Series] = {}
    parts: list[tuple[str, pd.Series]] = []
    if "fold" in lab and lab["fold"].notna().any():
        parts = [(f"fold {f}", lab["fold"] == f) for f in sorted(int(v) for v in lab["fold"].dropna().unique())]
    elif "split" in lab and lab["split"].notna().any():
        parts = [(s, lab["split"] == s) for s in SPLITS if (lab["split"] == s).any()]
    for name, mask in parts:
        part = lab[mask.fillna(False).astype(bool)]
        counts = part["label"].value_counts().reindex(cols, fill_value=0)
        counts["subjects"] = part["subject"].nunique()
        rows[name] = counts
    total = lab["label"].value_counts().reindex(cols, fill_value=0)
    total["subjects"] = lab["subject"].nunique()
    rows["total"] = total
    table = pd.DataFrame(rows).T.astype(int)
    table.columns.name = None
    table.insert(len(cols), "all", table[cols].sum(axis=1))
    return table


def resolve_classes(classes: str | list[str]) -> list[str]:
    """A class-set name (``ckplus7``, ``basic6``, ``ckplus8``), a comma-separated string or a list of names ->
    the ordered list of canonical class names. Unknown names raise :class:`ManifestError`."""
    if isinstance(classes, str):
        if classes in CLASS_SETS:
            return list(CLASS_SETS[classes])
        if "," not in classes:
            raise ManifestError(
                f"unknown class set {classes!r}; known sets: {', '.join(CLASS_SETS)} "
                "(or give a comma-separated list of class names)"
            )
        classes = [c for c in classes.split(",") if c.strip()]
    out: list[str] = []
    for name in classes:
        canon = canonical_class(name)
        if canon is None:
            raise ManifestError(f"unknown class name {name!r}; known classes: {', '.join(CANONICAL_CLASSES)}")
        if canon in out:
            raise ManifestError(f"class {canon!r} given twice in the class list")
        out.append(canon)
    if len(out) < 2:
        raise ManifestError(f"a class set needs at least two classes, got {out}")
    return out


def canonical_class(name: str) -> str | None:
    """Canonical class name for ``name`` (case-insensitive, aliases allowed), or None when unknown."""
    key = name.strip().lower()
    if key in CANONICAL_CLASSES:
        return key
    return CLASS_ALIASES.get(key)


def is_system_file(name: str) -> bool:
    """Finder / Explorer droppings: ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, ``._*`` (AppleDouble)."""
    return name.lower() in SYSTEM_FILES or name.startswith("._")


def is_ignored_dir(name: str) -> bool:
    """Hidden folders and the ``__MACOSX`` folder a macOS zip leaves behind."""
    return name.startswith(".") or name.lower() in SYSTEM_DIRS


def is_image(name: str) -> bool:
    return not name.startswith("._") and os.path.splitext(name)[1].lower() in IMAGE_EXTS


def is_video(name: str) -> bool:
    return not name.startswith("._") and os.path.splitext(name)[1].lower() in VIDEO_EXTS


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def trailing_number(stem: str) -> int | None:
    """The number a file stem ends with (``S005_001_00000011`` -> 11, ``012`` -> 12), or None."""
    m = _TRAILING_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def order_frames(names: list[str]) -> tuple[list[str], list[int] | None]:
    """Frame file names in temporal order and their frame numbers (None when some name carries no number).

    Names ending in a number sort by that number (not lexicographically); otherwise natural sort.
    """
    numbers = [trailing_number(Path(n).stem) for n in names]
    if names and all(n is not None for n in numbers):
        pairs = sorted(zip(numbers, names, strict=True), key=lambda p: (p[0], natural_key(p[1])))
        return [n for _, n in pairs], [int(k) for k, _ in pairs]
    return sorted(names, key=natural_key), None


def frame_gaps(numbers: list[int], first_expected: int | None = None) -> list[tuple[int, int]]:
    """Missing frame-number ranges (inclusive) between consecutive numbers, and before the first one when
    ``first_expected`` is given and smaller."""
    gaps: list[tuple[int, int]] = []
    if not numbers:
        return gaps
    if first_expected is not None and numbers[0] > first_expected:
        gaps.append((first_expected, numbers[0] - 1))
    for a, b in zip(numbers[:-1], numbers[1:], strict=True):
        if b > a + 1:
            gaps.append((a + 1, b - 1))
    return gaps


def format_gaps(gaps: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in gaps)


def note_missing_frames(
    seq_dir: Path, numbers: list[int], report: ScanReport, first_expected: int | None = None
) -> None:
    """Note the gaps in a sequence's frame numbers (see :func:`frame_gaps`); the sequence is kept as it is."""
    gaps = frame_gaps(numbers, first_expected=first_expected)
    if gaps:
        report.note(seq_dir, f"missing frames: {format_gaps(gaps)} (sequence kept with the frames it has)")


def read_small_csv(path: Path, what: str) -> pd.DataFrame:
    """A small user-written CSV as strings (no NA parsing, spaces after the commas dropped) with stripped,
    lower-case headers. :class:`ManifestError` naming ``what`` (e.g. "labels CSV") when the file is missing or
    not a readable CSV."""
    if not path.is_file():
        raise ManifestError(f"{path}: {what} not found")
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable {what} ({exc})") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    return table


def require_root(root: Path) -> Path:
    """The absolute, resolved root; :class:`ManifestError` when it is missing, not a folder, not readable or its
    path is not valid UTF-8."""
    root = Path(root).expanduser()
    if not is_valid_name(str(root)):
        raise ManifestError(f"{shown(root)}: dataset root path is not valid UTF-8; rename it")
    if not root.exists():
        raise ManifestError(f"{root}: dataset root not found")
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset root is not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise ManifestError(f"{root}: dataset root cannot be read (permission denied)")
    return root.resolve()


def sequence_row(
    *,
    sequence_id: str,
    dataset: str,
    subject: str,
    label: str | None,
    label_note: str | None,
    frame_paths: list[str] | None = None,
    video_path: str | None = None,
    landmark_paths: list[str] | None = None,
    peak_index: int | None = None,
    condition: str | None = None,
    split: str | None = None,
) -> dict:
    """One manifest row (see :mod:`data_manifests.schema`); a video row has no frames and ``n_frames`` 0
    (unknown until decoded). ``split``: the dataset's own split (``train`` / ``val`` / ``test``), if any."""
    frames = list(frame_paths or [])
    return {
        "sequence_id": sequence_id,
        "dataset": dataset,
        "subject": subject,
        "label": label,
        "labelled": label is not None,
        "label_note": None if label is not None else label_note,
        "fold": None,
        "n_frames": len(frames),
        "source_type": "video" if video_path else "frames",
        "video_path": video_path,
        "frame_paths": frames,
        "landmark_paths": landmark_paths,
        "peak_index": peak_index,
        "condition": condition,
        "split": split,
    }


def label_in_set(canon: str, classes: list[str], class_set_name: str) -> tuple[str | None, str | None]:
    """(label, None) when ``canon`` is in the class set, else (None, note saying it is not)."""
    if canon in classes:
        return canon, None
    return None, f"class {canon} not in class set {class_set_name}"


def class_set_name(classes: str | list[str]) -> str:
    return classes if isinstance(classes, str) else ",".join(classes)


def sequence_frame_names(seq_dir: Path, report: ScanReport) -> list[str]:
    """Image file names in a sequence folder, unordered, each real file once per scan (see :func:`entries`);
    system files, sub-folders and non-images are reported as skipped."""
    names: list[str] = []
    for e in entries(seq_dir, report):
        if is_system_file(e.name):
            report.skip(e.path, "system file")
        elif e.is_dir():
            report.skip(e.path, "folder inside a sequence folder")
        elif not e.is_file() or not is_image(e.name):
            report.skip(e.path, "not an image file")
        elif report.claim(e):
            names.append(e.name)
    return names


def image_row(
    *,
    sequence_id: str,
    dataset: str,
    subject: str,
    canon: str | None,
    classes: list[str],
    set_name: str,
    path: str,
    note: str | None = None,
    condition: str | None = None,
    split: str | None = None,
) -> dict:
    """A still image as a one-frame sequence (peak 0): labelled ``canon`` when it is in the class set, else
    unlabelled with a note (``note`` when ``canon`` is None: why the image has no label)."""
    label, why = label_in_set(canon, classes, set_name) if canon is not None else (None, note)
    return sequence_row(
        sequence_id=sequence_id,
        dataset=dataset,
        subject=subject,
        label=label,
        label_note=why,
        frame_paths=[path],
        peak_index=0,
        condition=condition,
        split=split,
    )


def stray_reason(entry: Entry, where: str) -> str | None:
    """Why a folder entry is not an image file to take (a system file, a folder, a non-image), naming ``where``
    it lies (e.g. "the JAFFE folder"); None for an image file."""
    if is_system_file(entry.name):
        return "system file"
    if entry.is_dir():
        return f"folder inside {where}"
    if not entry.is_file() or not is_image(entry.name):
        return "not an image file"
    return None
