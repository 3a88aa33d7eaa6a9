"""From a config to a manifest: generate the demo set when needed, scan the dataset, assign folds, write it."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from data_manifests.folds import require_classes
from data_manifests.scan import build_manifest
from data_manifests.schema import ManifestMeta, read_manifest, write_manifest
from pipeline.config import Config
from pipeline.runtime.progress import progress_bar

log = logging.getLogger(__name__)

# How each demo layout is scanned: (scanner format, labels CSV relative to the root or None).
DEMO_LAYOUT_SCAN: dict[str, tuple[str, str | None]] = {
    "ckplus": ("ckplus", None),
    "oulu": ("oulu", None),
    "videos": ("folder", "labels.csv"),
}


def ensure_demo_data(cfg: Config) -> None:
    """Generate the demo dataset at ``data.root`` unless a complete one is already there."""
    demo = cfg.data.demo
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(total, "demo-data")
        bar.update(done - bar.n)

    from data_manifests.demo import generate_demo  # scipy and the warp code: only when a set is generated

    summary = generate_demo(
        Path(cfg.data.root),
        layout=demo.layout,
        n_subjects=demo.subjects,
        seed=demo.seed,
        faces_dir=demo.faces,
        workers=demo.workers,
        progress=progress,
    )
    if bar is not None:
        bar.close()
    log.info(summary.text())


def prepare_manifest(cfg: Config, quiet: bool = False) -> tuple[pd.DataFrame, ManifestMeta]:
    """The manifest a run uses: ``data.manifest`` when given and present, else scanned and written.

    For ``data.format: demo`` the dataset is generated first when missing.
    """
    if cfg.data.manifest is not None and Path(cfg.data.manifest).is_file():
        df, meta = read_manifest(cfg.data.manifest)
        require_classes(df)  # a hand-made manifest is not built by assign_folds, which checks this
        return df, meta
    fmt, dataset_name, labels_csv = cfg.data.format, None, cfg.data.labels_csv
    if fmt == "demo":
        ensure_demo_data(cfg)
        fmt, labels_name = DEMO_LAYOUT_SCAN[cfg.data.demo.layout]
        dataset_name = "demo"
        if labels_name is not None:
            labels_csv = Path(cfg.data.root) / labels_name
    df, meta, report = build_manifest(
        Path(cfg.data.root),
        fmt,
        n_folds=cfg.data.folds,
        seed=cfg.fold_seed,
        fold_file=cfg.data.fold_file,
        labels_csv=labels_csv,
        classes=cfg.data.classes,
        include_neutral=cfg.data.include_neutral,
        neutral_frames=cfg.data.neutral_frames,
        oulu_system=cfg.data.oulu_system,
        oulu_illumination=cfg.data.oulu_illumination,
        **({"name_pattern": cfg.data.name_pattern} if fmt == "imagefolder" else {}),
        **({"kdef_angles": cfg.data.kdef_angles} if fmt == "kdef" else {}),
        **({"fer2013_images": cfg.data.fer2013_images} if fmt == "fer2013" and cfg.data.fer2013_images else {}),
        dataset_name=dataset_name,
    )
    write_manifest(df, cfg.manifest_path, meta)
    if not quiet:
        log.info(report.summary(df))
        log.info("manifest: %s", cfg.manifest_path)
    return df, meta
