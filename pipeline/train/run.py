"""`seqfer train CONFIG`: one deployable model trained on every labelled subject, written as a model folder.

The same pieces as cross-validation (:mod:`pipeline.cv.run`): the manifest, preprocessing (resumable; cached work is
reused), :func:`~pipeline.data.labelled.load_labelled_data` and :func:`~pipeline.data.labelled.split_fold`. Here
there is no test fold: every labelled subject trains except a seeded ``train.val_fraction`` of whole subjects,
which choose the epoch (early stopping and best epoch on validation, as in each CV fold). Output:
``OUTPUT_DIR/model/`` (see :mod:`pipeline.model_folder.folder`), whose model card quotes the CV accuracy from
``OUTPUT_DIR/cv/summary.json`` when `seqfer cv` ran.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config
from pipeline.cv.reports import accuracy
from pipeline.cv.run import cv_dir, resolve_device
from pipeline.data.labelled import LabelledData, load_labelled_data, split_fold
from pipeline.model_folder.folder import check_model_folder_target, cv_accuracy, write_model_folder
from pipeline.runtime.progress import progress_bar
from stages.errors import StageError
from stages.learning.models import TwoStream
from stages.learning.training.fit import fit, member_seeds, predict_proba


def model_dir(cfg: Config) -> Path:
    """Where `seqfer train` writes its model folder: ``OUTPUT_DIR/model``."""
    return Path(cfg.output_dir) / "model"


def deployment_split(data: LabelledData, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices over ALL labelled subjects: :func:`split_fold` with a fold number no row
    has, so its test part is empty and its seeded draw of whole validation subjects is the CV one's."""
    no_fold = int(data.folds.max()) + 1 if len(data.folds) else 0
    train_idx, val_idx, test_idx = split_fold(data.subjects, data.folds, no_fold, val_fraction, seed)
    assert len(test_idx) == 0
    return train_idx, val_idx


def run_train(cfg: Config, out_dir: Path | None = None, data: LabelledData | None = None) -> Path:
    """Preprocess (skipping cached work), train on all labelled subjects, write the model folder; returns it."""
    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else model_dir(cfg)
    check_model_folder_target(out)  # refuse a folder that is not a model folder before any work is done
    data = data if data is not None else load_labelled_data(cfg, preprocess=True)
    if len(data.labels) < 3:
        raise StageError(
            f"training needs at least 3 usable labelled sequences; found {len(data.labels)} "
            f"({len(data.excluded)} excluded by preprocessing)"
        )
    device = resolve_device(cfg.cv.device)
    n_subjects = len(set(data.subjects))
    seeds = member_seeds(cfg.seed, cfg.train.ensemble)
    bar = progress_bar(cfg.train.epochs * len(seeds), "train", unit="epoch")
    members, models, history = [], [], []
    try:
        for k, seed in enumerate(seeds):
            member, model, rows = _train_member(cfg, data, seed, device, bar, k, len(seeds))
            members.append(member)
            models.append(model)
            history += [{"member": k, **row} if len(seeds) > 1 else row for row in rows]
    finally:
        bar.close()
    first = members[0]
    counts = Counter(data.classes[i] for i in data.labels)
    info = {
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "format": cfg.data.format,
            "root": str(cfg.data.root),
            "manifest": str(cfg.manifest_path),
            "n_sequences": int(len(data.labels)),
            "n_subjects": n_subjects,
            "n_excluded": int(len(data.excluded)),
            "class_counts": {c: int(counts.get(c, 0)) for c in data.classes},
        },
        "split": {**first["split"], "val_fraction": cfg.train.val_fraction},
        "best_epoch": first["best_epoch"],
        "epochs_run": first["epochs_run"],
        "val_accuracy": first["val_accuracy"],
        "train_seconds": round(sum(m["train_seconds"] for m in members), 2),
        "members": members,
        "device": device,
        "cv": cv_accuracy(cv_dir(cfg), cfg),
    }
    write_model_folder(out, models, cfg, data.classes, info, history=history)
    what = f"{len(models)} networks" if len(models) > 1 else "1 network"
    print(f"train: {what}; model folder {out} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return out


def _train_member(
    cfg: Config, data: LabelledData, seed: int, device: str, bar: tqdm, k: int, n: int
) -> tuple[dict, TwoStream, list[dict]]:
    """Train ensemble member ``k`` of ``n`` (the whole single-network run at ``seed``: its own validation
    subjects, initialisation and augmentation). Returns (its facts for model.json, the network, its history);
    ``bar`` advances by ``cfg.train.epochs`` whether or not it stopped early."""
    train_idx, val_idx = deployment_split(data, cfg.train.val_fraction, seed)
    who = f"member {k + 1}/{n}: " if n > 1 else ""
    print(
        f"train: {who}{len(train_idx)} training and {len(val_idx)} validation sequences from "
        f"{len(set(data.subjects))} subjects on {device}",
        file=sys.stderr,
    )
    done = bar.n

    def on_epoch(row: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{who}val acc {row['val_acc']:.3f} loss {row['val_loss']:.3f}")

    result = fit(
        cfg.model,
        len(data.classes),
        data.subset(train_idx),
        data.subset(val_idx),
        cfg.train,
        seed=seed,
        device=device,
        on_epoch=on_epoch,
    )
    bar.update(done + cfg.train.epochs - bar.n)  # early stopping: the unused epochs count as done for the ETA
    val_acc = accuracy(predict_proba(result.model, data.subset(val_idx), device=device), data.labels[val_idx])
    print(
        f"train: {who}best epoch {result.best_epoch}/{len(result.history)}, validation accuracy "
        f"{100 * val_acc:.1f}% ({len(val_idx)} sequences)",
        file=sys.stderr,
    )
    member = {
        "seed": seed,
        "split": {
            "n_train": int(len(train_idx)),
            "n_val": int(len(val_idx)),
            "n_train_subjects": len(set(data.subjects[train_idx])),
            "n_val_subjects": len(set(data.subjects[val_idx])),
            "val_subjects": sorted(set(data.subjects[val_idx].tolist())),
            "seed": seed,
        },
        "best_epoch": int(result.best_epoch),
        "epochs_run": len(result.history),
        "val_accuracy": val_acc,
        "train_seconds": round(result.seconds, 2),
        "precision": result.precision,
    }
    return member, result.model, result.history
