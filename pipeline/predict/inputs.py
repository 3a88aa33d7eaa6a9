"""What `seqfer predict` accepts, turned into sequence sources: one :class:`PredictInput` per result row.

An INPUT string is, checked in this order:

- an existing **video** file (.mp4 .avi .mov .mkv .webm) -> one sequence;
- an existing **image** file (.png .jpg .jpeg .bmp .tif .tiff) -> a one-frame sequence;
- an existing **folder** of image frames -> one sequence, frames in numeric order of their names;
- a **manifest** (.parquet from `seqfer manifest`) -> one input per row (its label is kept as ``true_label``);
- a **list file** (.txt) -> one INPUT per non-empty line (relative paths from the list's folder; '#' comments);
- a **glob** (``*``, ``?``, ``[``; ``**`` recurses) -> each match, in natural order.

Anything else (a missing path, an unknown extension, a glob matching nothing, a folder without images, an
unreadable manifest) becomes an input with ``problem`` set; prediction reports it as status ``unreadable`` with
that reason instead of raising. Inputs are de-duplicated by name, first occurrence kept.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_manifests.errors import ManifestError
from data_manifests.scan_common import IMAGE_EXTS, VIDEO_EXTS, is_image, natural_key, order_frames
from stages.preprocess.decode import SequenceSource

MANIFEST_EXTS = frozenset({".parquet"})
LIST_EXTS = frozenset({".txt"})
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class PredictInput:
    """One thing to predict. ``name``: what the result row's ``input`` column shows (the path as given, or a
    manifest row's sequence_id); ``kind``: video | image | frames | manifest_row | invalid; ``source`` is None
    exactly when ``problem`` says why the input cannot be read. ``peak_named``: its label belongs to its peak frame
    (``source.peak_index``, else its last frame): a manifest row that names a peak index, or any row of a dataset
    whose sequences end at their peak (:data:`~data_manifests.schema.ONSET_TO_PEAK`); a path given to predict names
    none."""

    name: str
    kind: str
    source: SequenceSource | None = None
    problem: str = ""
    true_label: str | None = None
    peak_named: bool = False


def _invalid(name: str, problem: str) -> PredictInput:
    return PredictInput(name=name, kind="invalid", problem=problem)


def _supported() -> str:
    return "videos " + " ".join(sorted(VIDEO_EXTS)) + "; images " + " ".join(sorted(IMAGE_EXTS))


def input_from_path(path: str | Path, name: str | None = None) -> PredictInput:
    """A single existing-or-not path (no glob, manifest or list expansion) -> its input. The source holds
    absolute paths (workers may run elsewhere); ``name`` stays as given."""
    path = Path(path)
    name = str(path) if name is None else name
    path = Path(os.path.abspath(path))
    if path.is_dir():
        frames = [f.name for f in os.scandir(path) if f.is_file() and is_image(f.name)]
        if not frames:
            return _invalid(
                name,
                f"folder holds no image frames ({' '.join(sorted(IMAGE_EXTS))}); "
                "for a folder of videos pass a glob such as DIR/*.mp4",
            )
        ordered, _numbers = order_frames(frames)
        return PredictInput(name, "frames", SequenceSource(name, frame_paths=tuple(str(path / f) for f in ordered)))
    if not path.exists():
        return _invalid(name, "file not found")
    if not path.is_file():  # a FIFO, socket or device: opening it could block forever
        return _invalid(name, "not a regular file (a FIFO, socket or device); refused without opening it")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTS:
        return PredictInput(name, "video", SequenceSource(name, video_path=str(path)))
    if suffix in IMAGE_EXTS:
        return PredictInput(name, "image", SequenceSource(name, frame_paths=(str(path),)))
    return _invalid(
        name,
        f"unsupported file type {suffix or '(no extension)'} (supported: {_supported()}; "
        "manifests .parquet; lists .txt)",
    )


def _manifest_inputs(path: Path) -> list[PredictInput]:
    from data_manifests.schema import ONSET_TO_PEAK, read_manifest
    from pipeline.preprocess.to_stages import sources_from_manifest

    try:
        df, _meta = read_manifest(path)
    except ManifestError as exc:
        return [_invalid(str(path), f"unreadable manifest: {exc}")]
    inputs = []
    n = len(df)
    labels = df["label"].tolist() if "label" in df.columns else [None] * n
    labelled = df["labelled"].tolist() if "labelled" in df.columns else [False] * n
    to_peak = df["dataset"].isin(ONSET_TO_PEAK).tolist() if "dataset" in df.columns else [False] * n
    for source, label, is_labelled, at_peak in zip(sources_from_manifest(df), labels, labelled, to_peak, strict=True):
        label = label if bool(is_labelled) else None
        inputs.append(
            PredictInput(
                source.sequence_id,
                "manifest_row",
                source,
                true_label=None if label is None or label != label else str(label),
                peak_named=bool(at_peak) or source.peak_index is not None,
            )
        )
    return inputs


def _list_inputs(path: Path) -> list[PredictInput]:
    inputs: list[PredictInput] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        item = line if Path(line).is_absolute() else str(path.parent / line)
        inputs += expand_input(item, allow_lists=False)
    return inputs


def expand_input(item: str | Path, allow_lists: bool = True) -> list[PredictInput]:
    """One INPUT string -> its inputs (see the module doc). Never raises for a bad input."""
    text = str(item)
    path = Path(text)
    if path.is_file() and path.suffix.lower() in MANIFEST_EXTS:
        return _manifest_inputs(path)
    if allow_lists and path.is_file() and path.suffix.lower() in LIST_EXTS:
        return _list_inputs(path)
    if not path.exists() and any(c in text for c in GLOB_CHARS):
        matches = sorted(glob.glob(text, recursive=True), key=natural_key)
        if not matches:
            return [_invalid(text, "glob matched no files")]
        return [pin for m in matches for pin in expand_input(m, allow_lists=False)]
    return [input_from_path(path, text)]


def resolve_inputs(items: Iterable[str | Path], duplicates: list[str] | None = None) -> list[PredictInput]:
    """Every INPUT expanded, in the order given, duplicates (same name) dropped; their names are appended to
    ``duplicates`` when it is given (so the caller can say so)."""
    seen: set[str] = set()
    out: list[PredictInput] = []
    for item in items:
        for pin in expand_input(item):
            if pin.name not in seen:
                seen.add(pin.name)
                out.append(pin)
            elif duplicates is not None:
                duplicates.append(pin.name)
    return out
