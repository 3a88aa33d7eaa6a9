"""Scanner registry and manifest building: ``scan`` (root -> rows + report) and ``build_manifest`` (+ folds).

``SCANNERS`` maps a format name to a scanner ``(root, *, classes, **options) -> (DataFrame, ScanReport)``;
each scanner takes the options it knows (``labels_csv`` for folder, ``oulu_system`` and
``oulu_illumination`` for oulu, ``name_pattern`` for imagefolder, ``fer2013_images`` for fer2013, ``kdef_angles``
for kdef) and ignores the rest.

A dataset with its own split (FER2013: the ``split`` column holds train / val / test) gets no CV folds:
:func:`build_manifest` leaves ``fold`` null and records ``fold_source`` ``split`` (``n_folds`` 0). It is trained on
``train``, its epoch chosen on ``val`` and ``test`` scored once; cross-validation stays the protocol of the
datasets without a split (CK+, Oulu, CK+48, JAFFE, KDEF).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from data_manifests.ckplus import scan_ckplus
from data_manifests.errors import ManifestError
from data_manifests.fer2013 import scan_fer2013
from data_manifests.folder import scan_folder
from data_manifests.folds import assign_folds, has_own_split, load_fold_file, require_classes
from data_manifests.imagefolder import CKPLUS_NAME_PATTERN, scan_imagefolder
from data_manifests.jaffe import scan_jaffe
from data_manifests.kdef import DEFAULT_ANGLES, scan_kdef
from data_manifests.oulu import scan_oulu
from data_manifests.scan_common import ScanReport, fold_class_table, resolve_classes
from data_manifests.schema import ManifestMeta, normalise

__all__ = ["SCANNERS", "ScanReport", "build_manifest", "fold_class_table", "scan", "add_neutral_rows"]

SCANNERS: dict[str, Callable[..., tuple[pd.DataFrame, ScanReport]]] = {
    "ckplus": scan_ckplus,
    "oulu": scan_oulu,
    "folder": scan_folder,
    "imagefolder": scan_imagefolder,
    "fer2013": scan_fer2013,
    "jaffe": scan_jaffe,
    "kdef": scan_kdef,
}

NEUTRAL_SUFFIX = "_neutral"

NATIVE_CLASS_SET: dict[str, str] = {"fer2013": "basic7", "jaffe": "basic7", "kdef": "basic7"}
"""The class set that holds every class a format labels (its images of other classes stay unlabelled)."""


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
    fer2013_images: Path | None = None,
    kdef_angles: str | list[str] = DEFAULT_ANGLES,
    dataset_name: str | None = None,
    only_split: str | None = None,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan ``root`` with the ``fmt`` scanner into a normalised manifest (folds null) and a report.

    ``include_neutral`` (needs ``neutral`` in ``classes``) adds, per labelled frame sequence, a row
    ``<id>_neutral`` holding its first ``neutral_frames`` frames, label neutral, peak_index 0.
    ``dataset_name`` overrides the ``dataset`` column. ``only_split``: a hint that only that split's rows are
    wanted; a scanner that can skip the rest unread does (FER2013's folder export), so the caller still filters.
    Raises :class:`ManifestError` for an unknown format, a
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
        fer2013_images=fer2013_images,
        kdef_angles=kdef_angles,
        only_split=only_split,
    )
    native = NATIVE_CLASS_SET.get(fmt)
    left_out = [c for c in resolve_classes(native) if c not in class_list] if native else []
    if native and left_out:
        report.note(
            report.root or root,
            f"class set leaves out {', '.join(left_out)}: {fmt}'s images of it stay unlabelled "
            f"(--classes {native} / data.classes: {native} takes all of {fmt}'s classes)",
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
    metadata and the scan report. A manifest with no labelled sequence gets no folds (prediction only); nor does
    a dataset with its own split (``fold_source`` ``split``, ``n_folds`` 0; a ``fold_file`` is then refused)."""
    df, report = scan(Path(root), fmt, **scan_kwargs)
    classes = resolve_classes(scan_kwargs.get("classes", "ckplus7"))
    if not df["labelled"].any():
        report.note(report.root or root, "no labelled sequences: folds not assigned (a prediction-only manifest)")
        source = "none"
    elif has_own_split(df):
        if fold_file is not None:
            raise ManifestError(
                f"fold file {fold_file}: {fmt} carries its own split (train / val / test), so it gets no CV folds"
            )
        require_classes(df)
        source, n_folds = "split", 0
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
