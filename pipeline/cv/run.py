"""`seqfer cv`: subject-independent k-fold cross-validation of the configured model, folds in parallel on Ray actors.

Honest by construction: each fold's test subjects are never seen in training or validation; the epoch is chosen
on a validation split of the TRAINING subjects; a sequence that failed preprocessing is reported as excluded,
not silently dropped. A finished fold is not re-run (its ``result.json`` carries the hash of the config that
produced it).

Run folder ``OUTPUT_DIR/cv/``: ``config.yaml``, ``environment.json``, ``summary.json``, ``summary.md``,
``predictions.csv``, ``confusion.csv`` + ``.png``, ``curves.csv`` + ``.png``, ``splits.csv``, ``excluded.csv`` and
``fold_K/`` with ``model.safetensors`` (+ its JSON config/classes; ``model.K.safetensors`` for the other members
of a ``train.ensemble``), ``history.csv``, ``result.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config, to_yaml
from pipeline.cv.reports import (
    accuracy,
    confusion,
    mean_class_accuracy,
    save_confusion_png,
    save_curves_png,
    summary_markdown,
)
from pipeline.data.labelled import LabelledData, load_labelled_data, split_fold
from pipeline.model_folder.folder import member_file, member_files
from pipeline.preprocess.run import sequence_config
from pipeline.runtime.output_folder import claim_folder
from pipeline.runtime.progress import progress_bar
from pipeline.runtime.ray_pool import NoWorkers, ensure_ray, stream_to_actors
from pipeline.runtime.run_key import data_identity, run_key
from stages.atomic_io import atomic_write_text
from stages.errors import StageError
from stages.learning.models.config import ModelConfig, TrainConfig
from stages.learning.training.fit import fit, member_seeds, predict_proba, save_checkpoint
from stages.preprocess.cache import stable_hash


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
    """Train and test one fold; writes ``fold_dir`` and returns the fold's result (predictions included).

    With ``train.ensemble`` = n, the fold trains n members, member k being the fold's single-network run at
    seed + k (its own validation subjects, from this fold's training subjects); the test probabilities are their
    mean. Each member resumes from its own training state; the split, epoch and subject fields of the result are
    member 0's, ``members`` has every member's seed, best epoch, test accuracy and test probabilities."""
    start = time.perf_counter()
    fold_path = Path(fold_dir)
    fold_path.mkdir(parents=True, exist_ok=True)
    mcfg, tcfg = ModelConfig.model_validate(model_cfg), TrainConfig.model_validate(train_cfg)
    seeds = member_seeds(seed, tcfg.ensemble)
    for stale in member_files(fold_path)[len(seeds) :]:  # members of an earlier, larger ensemble
        stale.unlink()
    probas, members, histories, first = [], [], [], None
    for k, member_seed in enumerate(seeds):
        train_idx, val_idx, test_idx = split_fold(data.subjects, data.folds, fold, val_fraction, member_seed)
        result = fit(
            mcfg,
            len(data.classes),
            data.subset(train_idx),
            data.subset(val_idx),
            tcfg,
            seed=member_seed * 1000 + fold,
            device=device,
            resume_path=fold_path / train_state_file(k),  # a killed fold resumes from its last saved epoch
            resume_key=f"{config_hash}:{fold}" + (f":{k}" if k else ""),
            save_every_s=TRAIN_STATE_EVERY_S,
        )
        proba = predict_proba(result.model, data.subset(test_idx), device=device)
        probas.append(proba)
        history = pd.DataFrame(result.history)
        history.insert(0, "fold", fold)
        if len(seeds) > 1:
            history.insert(1, "member", k)
        histories.append(history)
        if result.pretrain_history:
            pd.DataFrame(result.pretrain_history).assign(fold=fold).to_csv(
                fold_path / ("pretrain_history.csv" if k == 0 else f"pretrain_history.{k}.csv"), index=False
            )
        save_checkpoint(
            fold_path / member_file(k),
            result.model,
            mcfg,
            data.classes,
            dict(fold=fold, member=k, seed=member_seed, best_epoch=result.best_epoch, config_hash=config_hash),
        )
        members.append(
            {
                "member": k,
                "seed": member_seed,
                "best_epoch": int(result.best_epoch),
                "precision": result.precision,
                "accuracy": accuracy(proba, data.labels[test_idx]),
                "val_subjects": sorted(set(data.subjects[val_idx])),
                "proba": proba.tolist(),
            }
        )
        if first is None:
            first = (train_idx, val_idx, test_idx, result)
    train_idx, val_idx, test_idx, result = first
    proba = np.mean(probas, axis=0)
    pd.concat(histories, ignore_index=True).to_csv(fold_path / "history.csv", index=False)
    out = {
        "fold": fold,
        "accuracy": accuracy(proba, data.labels[test_idx]),
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
        "members": members,
    }
    atomic_write_text(fold_path / "result.json", json.dumps(out))
    for k in range(len(seeds)):  # the fold is finished: its result replaces the training states
        (fold_path / train_state_file(k)).unlink(missing_ok=True)
    return out


def train_state_file(k: int) -> str:
    """Per-epoch training state of ensemble member ``k`` of an unfinished fold (stages.learning.training.fit.fit's
    resume_path): ``train_state.pt`` for member 0, ``train_state.K.pt`` for the others."""
    return TRAIN_STATE_FILE if k == 0 else f"train_state.{k}.pt"


TRAIN_STATE_FILE = "train_state.pt"
"""Per-epoch training state of an unfinished fold (stages.learning.training.fit.fit's resume_path)."""

TRAIN_STATE_EVERY_S = 10.0
"""A fold's training state is written at most this often (fit's save_every_s): a killed fold repeats at most
10 s of training, and a 0.3 s epoch does not spend a tenth of its time writing the state."""


class FoldWorker:
    """Trains folds of one CV run: in this process, or as a Ray actor (the data shipped to it once).

    ``args``: (model config, train config (both JSON dicts), val_fraction, seed, device) of :func:`train_fold`;
    ``out``: the run folder (fold K writes ``out/fold_K``)."""

    def __init__(self, data: LabelledData, args: tuple, out: str, config_hash: str) -> None:
        self.data, self.args, self.out, self.config_hash = data, args, out, config_hash

    def train(self, fold: int) -> dict:
        return train_fold(fold, self.data, *self.args, str(Path(self.out) / f"fold_{fold}"), self.config_hash)


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


def _fold_stream(
    cfg: Config, data: LabelledData, todo: list[int], device: str, out: str, config_hash: str, use_ray: bool
) -> Iterator[tuple[int, dict | BaseException]]:
    """THE fold executor: (fold, result of :func:`train_fold`) as folds finish. ``use_ray=False``: one after
    another in this process; otherwise on ``cv.parallel`` (default ``ray.workers``) Ray actors through
    :func:`~pipeline.runtime.ray_pool.stream_to_actors`, so folds get its fault handling (a dead worker's fold is
    retried, a worker that cannot be scheduled within ``ray.start_timeout`` is dropped; no time limit per fold).
    A fold that raised comes back as its exception."""
    args = (
        cfg.model.model_dump(mode="json"),
        cfg.train.model_dump(mode="json"),
        cfg.train.val_fraction,
        cfg.seed,
        device,
    )
    if not use_ray:
        worker = FoldWorker(data, args, out, config_hash)
        return ((fold, worker.train(fold)) for fold in todo)
    import ray

    ensure_ray(cfg.ray)
    parallel = cfg.cv.parallel or cfg.ray.workers
    worker_cls = ray.remote(num_cpus=1, num_gpus=1 / parallel if device == "cuda" else 0)(FoldWorker)
    data_ref = ray.put(data)
    return stream_to_actors(
        lambda: worker_cls.remote(data_ref, args, out, config_hash),
        min(parallel, len(todo)),
        todo,
        lambda actor, fold: actor.train.remote(fold),
        per_actor=1,
        item_timeout=None,
        start_timeout=cfg.ray.start_timeout,
    )


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

    if todo:
        stream = _fold_stream(cfg, data, todo, device, str(out), config_hash, use_ray)
        bar = progress_bar(len(todo), "cv folds", unit="fold")
        try:
            for fold, result in stream:
                if isinstance(result, NoWorkers):
                    raise StageError(f"cv fold {fold}: {result}") from None
                if isinstance(result, BaseException):  # a fold that failed fails the run, as it would in-process
                    raise result
                results[fold] = result
                bar.update(1)
                bar.set_postfix_str(f"fold {fold} acc {result['accuracy']:.3f}")
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
        "ensemble": cfg.train.ensemble,
        "member_accuracy_mean": float(np.mean([m["accuracy"] for r in results for m in r.get("members", [r])]))
        if results
        else float("nan"),
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
