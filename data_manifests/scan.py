"""Scanner registry and manifest building: ``scan`` (root -> rows + report) and ``build_manifest`` (+ folds).

``SCANNERS`` maps a format name to a scanner ``(root, *, classes, **options) -> (DataFrame, ScanReport)``;
each scanner takes the options it knows (``labels_csv`` for folder, ``oulu_system`` and
``oulu_illumination`` for oulu, ``name_pattern`` for imagefolder) and ignores the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from data_manifests.ckplus import scan_ckplus
from data_manifests.errors import ManifestError
from data_manifests.folder import scan_folder
from data_manifests.folds import assign_folds, load_fold_file
from data_manifests.imagefolder import CKPLUS_NAME_PATTERN, scan_imagefolder
from data_manifests.oulu import scan_oulu
from data_manifests.scan_common import ScanReport, fold_class_table, resolve_classes
from data_manifests.schema import ManifestMeta, normalise

__all__ = ["SCANNERS", "ScanReport", "build_manifest", "fold_class_table", "scan", "add_neutral_rows"]

SCANNERS: dict[str, Callable[..., tuple[pd.DataFrame, ScanReport]]] = {
    "ckplus": scan_ckplus,
    "oulu": scan_oulu,
    "folder": scan_folder,
    "imagefolder": scan_imagefolder,
}

NEUTRAL_SUFFIX = "_neutral"


def scan(
    root: Path,
    fmt: str,
    *,
    labels_csv: Path | None = None,
    classes: str | list[str] = "ckplus7",
    include_neutral: bool = False,
    neutral_frames: int = 1,
    oulu_system: str = "VL",
    oulu_illumination: str = "Strong",
    name_pattern: str = CKPLUS_NAME_PATTERN,
    dataset_name: str | None = None,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan ``root`` with the ``fmt`` scanner into a normalised manifest (folds null) and a report.

    ``include_neutral`` (needs ``neutral`` in ``classes``) adds, per labelled frame sequence, a row
    ``<id>_neutral`` holding its first ``neutral_frames`` frames, label neutral, peak_index 0.
    ``dataset_name`` overrides the ``dataset`` column. Raises :class:`ManifestError` for an unknown format, a
    missing root, a root without the format's layout, or inconsistent options.
    """
    if fmt not in SCANNERS:
        raise ManifestError(f"unknown dataset format {fmt!r}; known formats: {', '.join(SCANNERS)}")
    if labels_csv is not None and fmt != "folder":
        raise ManifestError(f"a labels CSV ({labels_csv}) is only read by --format folder, not {fmt}")
    class_list = resolve_classes(classes)
    if include_neutral and "neutral" not in class_list:
        raise ManifestError(
            f"include_neutral needs 'neutral' in the class set, which is {', '.join(class_list)} "
            "(use --classes ckplus8)"
        )
    if neutral_frames < 1:
        raise ManifestError(f"neutral_frames must be at least 1, got {neutral_frames}")
    df, report = SCANNERS[fmt](
        Path(root),
        classes=classes,
        labels_csv=labels_csv,
        oulu_system=oulu_system,
        oulu_illumination=oulu_illumination,
        name_pattern=name_pattern,
    )
    if include_neutral:
        df = add_neutral_rows(df, neutral_frames, report)
    if dataset_name is not None:
        df["dataset"] = dataset_name
        report.dataset = dataset_name
    return normalise(df), report


def add_neutral_rows(df: pd.DataFrame, neutral_frames: int, report: ScanReport) -> pd.DataFrame:
    """Rows ``<id>_neutral`` (first ``neutral_frames`` frames, label neutral, same subject, peak 0) after each
    labelled non-neutral frame sequence; videos are reported (no frames before decoding)."""
    extra = []
    for row in df[df["labelled"] & (df["label"] != "neutral")].itertuples(index=False):
        rec = row._asdict()
        if rec.get("source_type", "frames") != "frames":
            report.skip(
                rec.get("video_path") or rec["sequence_id"],
                "no neutral row: video frames unknown until decoded",
            )
            continue
        n = min(neutral_frames, len(rec["frame_paths"]))
        if neutral_frames >= len(rec["frame_paths"]):
            report.note(
                rec["sequence_id"],
                f"neutral row: only {len(rec['frame_paths'])} frames, so the neutral row reaches the peak",
            )
        lms = rec.get("landmark_paths")
        rec.update(
            sequence_id=rec["sequence_id"] + NEUTRAL_SUFFIX,
            label="neutral",
            labelled=True,
            label_note=None,
            n_frames=n,
            frame_paths=list(rec["frame_paths"][:n]),
            landmark_paths=list(lms[:n]) if isinstance(lms, list) else None,
            peak_index=0,
        )
        extra.append(rec)
    if not extra:
        return df
    out = pd.concat([df, pd.DataFrame(extra, columns=df.columns)], ignore_index=True)
    return out.sort_values("sequence_id", kind="stable").reset_index(drop=True)


def build_manifest(
    root: Path,
    fmt: str,
    *,
    n_folds: int = 10,
    seed: int = 0,
    fold_file: Path | None = None,
    **scan_kwargs,
) -> tuple[pd.DataFrame, ManifestMeta, ScanReport]:
    """Scan, then set folds (stratified-group with ``seed``, or from ``fold_file``); returns the manifest, its
    metadata and the scan report. A manifest with no labelled sequence gets no folds (prediction only)."""
    df, report = scan(Path(root), fmt, **scan_kwargs)
    classes = resolve_classes(scan_kwargs.get("classes", "ckplus7"))
    if not df["labelled"].any():
        report.note(report.root or root, "no labelled sequences: folds not assigned (a prediction-only manifest)")
        source = "none"
    elif fold_file is not None:
        df = load_fold_file(Path(fold_file), df, n_folds)
        source = str(Path(fold_file).resolve())
    else:
        df = assign_folds(df, n_folds=n_folds, seed=seed)
        source = "stratified-group"
    extra = {
        "format": fmt,
        "root": report.root or str(root),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in scan_kwargs.items() if v is not None},
    }
    meta = ManifestMeta(classes=classes, n_folds=n_folds, fold_seed=seed, fold_source=source, extra=extra)
    return normalise(df), meta, report
