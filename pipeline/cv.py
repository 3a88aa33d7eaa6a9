"""`seqfer cv`: subject-independent k-fold cross-validation of the configured model, one Ray task per fold.

Honest by construction: each fold's test subjects are never seen in training or validation; the epoch is chosen
on a validation split of the TRAINING subjects; a sequence that failed preprocessing is reported as excluded,
not silently dropped. A finished fold is not re-run (its ``result.json`` carries the hash of the config that
produced it).

Run folder ``OUTPUT_DIR/cv/``: ``config.yaml``, ``environment.json``, ``summary.json``, ``summary.md``,
``predictions.csv``, ``confusion.csv`` + ``.png``, ``curves.csv`` + ``.png``, ``splits.csv``, ``excluded.csv`` and
``fold_K/`` with ``model.safetensors`` (+ its JSON config/classes), ``history.csv``, ``result.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config, to_yaml
from pipeline.dataset import prepare_manifest
from pipeline.output_folder import claim_folder
from pipeline.preprocess import preprocess_dir, run_preprocess, sequence_config, source_from_row
from pipeline.progress import progress_bar
from pipeline.ray_runtime import ensure_ray
from pipeline.reports import (
    confusion,
    mean_class_accuracy,
    save_confusion_png,
    save_curves_png,
    summary_markdown,
)
from pipeline.run_key import data_identity, run_key
from stages.atomic_io import atomic_write_text
from stages.cache import stable_hash
from stages.model_extras import ModelNeeds, build_targets, model_inputs, needs_of
from stages.models.config import ModelConfig, TrainConfig
from stages.sequence import STATUS_OK, SequenceProcessor
from stages.training import ArrayDataset, fit, predict_proba, save_checkpoint


@dataclass
class LabelledData:
    """Model inputs of every labelled, successfully preprocessed sequence, in manifest order."""

    sequence_ids: np.ndarray
    subjects: np.ndarray
    folds: np.ndarray
    labels: np.ndarray  # class indices into `classes`
    appearance: np.ndarray  # [N, C, S, S] float32
    trajectory: np.ndarray  # [N, L, 68, 2] float32
    classes: list[str]
    excluded: pd.DataFrame  # labelled sequences without model input, with the reason
    landmarks: np.ndarray | None = None  # [N, 68, 2] peak-frame aligned landmarks, model-input pixels
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # training-only per-sequence arrays

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        targets = {k: v[idx] for k, v in self.targets.items()}
        return ArrayDataset(self.appearance[idx], self.trajectory[idx], self.labels[idx], targets)


def load_labelled_data(cfg: Config, preprocess: bool = True, needs: ModelNeeds | None = None) -> LabelledData:
    """Manifest -> (preprocess, skipping cached work) -> model inputs of the labelled sequences.

    ``needs``: appearance extras appended and training targets computed (stages.model_extras); default: what
    ``cfg.model`` declares.
    """
    needs = needs_of(cfg.model) if needs is None else needs
    df, meta = prepare_manifest(cfg)
    if preprocess:
        run_preprocess(cfg, manifest=df)
    index = pd.read_parquet(preprocess_dir(cfg) / "index.parquet").set_index("sequence_id")
    processor = SequenceProcessor(sequence_config(cfg), cfg.cache_dir)
    classes = list(meta.classes)
    keep, records, excluded = [], [], []
    recomputed = 0
    for _, row in df[df["labelled"]].iterrows():
        status = index["status"].get(row["sequence_id"], "not_preprocessed")
        reason = index["reason"].get(row["sequence_id"], "")
        record = processor.load(source_from_row(row)) if status == STATUS_OK else None
        if record is None and status == STATUS_OK:  # damaged or removed since preprocessing: recompute it now
            outcome = processor.process(source_from_row(row))
            record, status, reason = outcome.record, outcome.status, outcome.reason
            recomputed += 1
        if record is None:
            excluded.append(
                {
                    "sequence_id": row["sequence_id"],
                    "subject": row["subject"],
                    "fold": row["fold"],
                    "label": row["label"],
                    "status": status,
                    "reason": reason,
                }
            )
            continue
        keep.append(row)
        records.append(record)
    kept = pd.DataFrame(keep)
    if recomputed:
        print(
            f"data: {recomputed} sequence(s) had a damaged or missing cache entry and were recomputed", file=sys.stderr
        )
    if excluded:
        n_labelled = len(keep) + len(excluded)
        reasons = Counter(f"{e['status']}: {e['reason']}" if e["reason"] else e["status"] for e in excluded)
        print(
            f"WARNING: using {len(keep)} of {n_labelled} labelled sequences; {len(excluded)} excluded ("
            + "; ".join(f"{n}x {r}" for r, n in reasons.most_common(5))
            + ")",
            file=sys.stderr,
        )
    appearance, trajectory, landmarks = model_inputs(records, cfg.model.input, needs.extras)
    return LabelledData(
        sequence_ids=kept["sequence_id"].to_numpy(str),
        subjects=kept["subject"].to_numpy(str),
        folds=kept["fold"].to_numpy(np.int64),
        labels=np.array([classes.index(c) for c in kept["label"]], dtype=np.int64),
        appearance=appearance,
        trajectory=trajectory,
        classes=classes,
        excluded=pd.DataFrame(excluded, columns=["sequence_id", "subject", "fold", "label", "status", "reason"]),
        landmarks=landmarks,
        targets=build_targets(records, needs.targets, cfg.cache_dir),
    )


def split_fold(
    subjects: np.ndarray, folds: np.ndarray, fold: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row indices for one fold. Test = the fold's rows; validation = a seeded draw of
    whole TRAINING subjects; no subject is in two parts."""
    test = np.flatnonzero(folds == fold)
    train_subjects = np.array(sorted(set(subjects[folds != fold])))
    rng = np.random.default_rng([seed, fold])
    # At least one validation subject, but never all of them (a single training subject: no validation, and
    # fit() keeps the last epoch).
    n_val = min(max(1, int(round(val_fraction * len(train_subjects)))), len(train_subjects) - 1)
    val_subjects = set(rng.choice(train_subjects, size=n_val, replace=False).tolist())
    is_train_row = folds != fold
    is_val_row = np.array([s in val_subjects for s in subjects])
    return np.flatnonzero(is_train_row & ~is_val_row), np.flatnonzero(is_train_row & is_val_row), test


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def train_fold(
    fold: int,
    data: LabelledData,
    model_cfg: dict,
    train_cfg: dict,
    val_fraction: float,
    seed: int,
    device: str,
    fold_dir: str,
    config_hash: str,
) -> dict:
    """Train and test one fold; writes ``fold_dir`` and returns the fold's result (predictions included)."""
    start = time.perf_counter()
    fold_path = Path(fold_dir)
    fold_path.mkdir(parents=True, exist_ok=True)
    mcfg, tcfg = ModelConfig.model_validate(model_cfg), TrainConfig.model_validate(train_cfg)
    train_idx, val_idx, test_idx = split_fold(data.subjects, data.folds, fold, val_fraction, seed)
    result = fit(
        mcfg,
        len(data.classes),
        data.subset(train_idx),
        data.subset(val_idx),
        tcfg,
        seed=seed * 1000 + fold,
        device=device,
        resume_path=fold_path / TRAIN_STATE_FILE,  # a killed fold resumes from its last epoch
        resume_key=f"{config_hash}:{fold}",
    )
    proba = predict_proba(result.model, data.subset(test_idx), device=device)
    pred = proba.argmax(axis=1)
    history = pd.DataFrame(result.history)
    history.insert(0, "fold", fold)
    history.to_csv(fold_path / "history.csv", index=False)
    if result.pretrain_history:
        pd.DataFrame(result.pretrain_history).assign(fold=fold).to_csv(fold_path / "pretrain_history.csv", index=False)
    save_checkpoint(
        fold_path / "model.safetensors",
        result.model,
        mcfg,
        data.classes,
        {"fold": fold, "best_epoch": result.best_epoch, "config_hash": config_hash},
    )
    out = {
        "fold": fold,
        "accuracy": float((pred == data.labels[test_idx]).mean()) if len(test_idx) else float("nan"),
        "n_test": int(len(test_idx)),
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "best_epoch": int(result.best_epoch),
        "seconds": time.perf_counter() - start,
        "device": device,
        "config_hash": config_hash,
        "test_ids": data.sequence_ids[test_idx].tolist(),
        "proba": proba.tolist(),
        "train_subjects": sorted(set(data.subjects[train_idx])),
        "val_subjects": sorted(set(data.subjects[val_idx])),
        "test_subjects": sorted(set(data.subjects[test_idx])),
    }
    atomic_write_text(fold_path / "result.json", json.dumps(out))
    (fold_path / TRAIN_STATE_FILE).unlink(missing_ok=True)  # the fold is finished: its result replaces it
    return out


TRAIN_STATE_FILE = "train_state.pt"
"""Per-epoch training state of an unfinished fold (stages.training.fit's resume_path)."""


def cv_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "cv"


def config_hash_of(cfg: Config) -> str:
    """Hash of everything a fold's result depends on; a finished fold with another hash is re-run."""
    return stable_hash(
        cfg.seed,
        cfg.model,
        cfg.train,
        cfg.train.val_fraction,
        sequence_config(cfg),
        cfg.data.folds,
        cfg.fold_seed,
        str(cfg.data.fold_file),
    )


def read_fold_result(path: Path) -> dict | None:
    """A finished fold's ``result.json``, or None when it is absent, empty or damaged (that fold is re-run)."""
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        print(f"cv: {path} is unreadable ({type(exc).__name__}); that fold is re-run", file=sys.stderr)
        return None
    keys = ("config_hash", "fold", "accuracy", "test_ids", "proba")
    if not isinstance(result, dict) or any(k not in result for k in keys):
        print(f"cv: {path} is incomplete or from an older seqfer; that fold is re-run", file=sys.stderr)
        return None
    return result


def run_cv(cfg: Config, data: LabelledData | None = None, use_ray: bool = True) -> dict:
    """Run the configured folds (resuming finished ones) and write the run folder. Returns summary.json.

    ``use_ray=False`` trains the folds one after another in this process (same results; for a single GPU
    machine or where Ray is unavailable).
    """
    start = time.perf_counter()
    data = data if data is not None else load_labelled_data(cfg)
    out = claim_folder(cv_dir(cfg), "cv", legacy=("config.yaml", "environment.json"))
    (out / "config.yaml").write_text(to_yaml(cfg))
    device = resolve_device(cfg.cv.device)
    _write_environment(out / "environment.json", device)
    config_hash = run_key("cv-fold", config_hash_of(cfg), data_identity(data))
    all_folds = sorted(set(data.folds.tolist()))
    folds = all_folds if cfg.cv.run_folds is None else [f for f in cfg.cv.run_folds if f in all_folds]

    results: dict[int, dict] = {}
    todo = []
    for fold in folds:
        previous = read_fold_result(out / f"fold_{fold}" / "result.json")
        if previous is not None and previous.get("config_hash") == config_hash:
            results[fold] = previous
        else:
            todo.append(fold)
    if results:
        print(f"cv: {len(results)} fold(s) already finished with this config and data, not re-run", file=sys.stderr)

    if todo and not use_ray:
        args = (cfg.model.model_dump(mode="json"), cfg.train.model_dump(mode="json"), cfg.train.val_fraction)
        bar = progress_bar(len(todo), "cv folds", unit="fold")
        try:
            for fold in todo:
                results[fold] = train_fold(fold, data, *args, cfg.seed, device, str(out / f"fold_{fold}"), config_hash)
                bar.update(1)
                bar.set_postfix_str(f"fold {fold} acc {results[fold]['accuracy']:.3f}")
        finally:
            bar.close()
    elif todo:
        import ray

        ensure_ray(cfg.ray)
        parallel = cfg.cv.parallel or cfg.ray.workers
        remote = ray.remote(num_cpus=1, num_gpus=1 / parallel if device == "cuda" else 0)(train_fold)
        data_ref = ray.put(data)
        args = (
            cfg.model.model_dump(mode="json"),
            cfg.train.model_dump(mode="json"),
            cfg.train.val_fraction,
            cfg.seed,
            device,
        )
        pending = {remote.remote(f, data_ref, *args, str(out / f"fold_{f}"), config_hash): f for f in todo}
        bar = progress_bar(len(todo), "cv folds", unit="fold")
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    fold = pending.pop(ref)
                    results[fold] = ray.get(ref)
                    bar.update(1)
                    bar.set_postfix_str(f"fold {fold} acc {results[fold]['accuracy']:.3f}")
        finally:
            bar.close()

    summary = write_cv_report(cfg, data, [results[f] for f in folds], out, time.perf_counter() - start, device)
    print((out / "summary.md").read_text(), file=sys.stderr)
    return summary


def write_cv_report(
    cfg: Config, data: LabelledData, results: list[dict], out: Path, seconds: float, device: str
) -> dict:
    """Aggregate fold results into the run folder's tables, plots and summaries."""
    classes = data.classes
    row_of = {sid: i for i, sid in enumerate(data.sequence_ids.tolist())}
    rows = []
    for r in results:
        for sid, p in zip(r["test_ids"], r["proba"], strict=True):
            row = row_of[sid]
            rows.append(
                {
                    "sequence_id": data.sequence_ids[row],
                    "subject": data.subjects[row],
                    "fold": r["fold"],
                    "label": classes[data.labels[row]],
                    "pred": classes[int(np.argmax(p))],
                    **{f"p_{c}": float(v) for c, v in zip(classes, p, strict=True)},
                }
            )
    predictions = pd.DataFrame(rows)
    predictions.to_csv(out / "predictions.csv", index=False)
    y = np.array([classes.index(c) for c in predictions["label"]], dtype=np.int64)
    yhat = np.array([classes.index(c) for c in predictions["pred"]], dtype=np.int64)
    cm = confusion(y, yhat, len(classes))
    pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes).to_csv(out / "confusion.csv")
    accs = np.array([r["accuracy"] for r in results])
    summary = {
        "model": cfg.model.streams
        + (f" ({cfg.model.appearance.name} + {cfg.model.geometry.name})" if cfg.model.streams == "fused" else ""),
        "dataset": str(cfg.data.root),
        "classes": classes,
        "accuracy_mean": float(accs.mean()) if len(accs) else float("nan"),
        "accuracy_std": float(accs.std(ddof=0)) if len(accs) else float("nan"),
        "accuracy_pooled": float((y == yhat).mean()) if len(y) else float("nan"),
        "mean_class_accuracy": mean_class_accuracy(y, yhat),
        "n_sequences": int(len(predictions)),
        "n_subjects": int(len(set(data.subjects))),
        "n_excluded": int(len(data.excluded)),
        "seconds": seconds,
        "device": device,
        "folds": [
            {k: r[k] for k in ("fold", "accuracy", "n_test", "n_train", "n_val", "best_epoch", "seconds")}
            for r in results
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary, classes, cm))
    save_confusion_png(
        cm,
        classes,
        out / "confusion.png",
        f"pooled confusion, accuracy {100 * summary['accuracy_mean']:.1f}% (mean over folds)",
    )
    curves = pd.concat([pd.read_csv(out / f"fold_{r['fold']}" / "history.csv") for r in results], ignore_index=True)
    curves.to_csv(out / "curves.csv", index=False)
    save_curves_png(curves, out / "curves.png")
    splits = [
        {"fold": r["fold"], "part": part, "subject": s}
        for r in results
        for part in ("train", "val", "test")
        for s in r[f"{part}_subjects"]
    ]
    pd.DataFrame(splits).to_csv(out / "splits.csv", index=False)
    data.excluded.to_csv(out / "excluded.csv", index=False)
    return summary


def _write_environment(path: Path, device: str) -> None:
    import ray
    import torch

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "device": device,
        "cuda_device": torch.cuda.get_device_name(0) if device == "cuda" else None,
    }
    path.write_text(json.dumps(env, indent=2))
