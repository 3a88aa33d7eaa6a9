"""`seqfer train CONFIG`: one deployable model trained on every labelled subject, written as a model folder.

The same pieces as cross-validation (:mod:`pipeline.cv.run`): the manifest, preprocessing (resumable; cached work is
reused), :func:`~pipeline.data.labelled.load_labelled_data`, :func:`~pipeline.data.labelled.split_fold` and the one
training path of an ensemble member (:func:`~stages.learning.training.member.train_member`, with its seeding rule).
Here there is no test fold: every labelled subject trains except a seeded ``train.val_fraction`` of whole
subjects, which choose the epoch (early stopping and best epoch on validation, as in each CV fold). A dataset with
its own split (FER2013; :attr:`~pipeline.data.labelled.LabelledData.splits`) trains on its ``train`` rows and
chooses the epoch on its ``val`` rows instead; its ``test`` rows are never used (``seqfer evaluate ... --split
test`` scores them once). Output:
``OUTPUT_DIR/model/`` (see :mod:`pipeline.model_folder.folder`), whose model card quotes the CV accuracy from
``OUTPUT_DIR/cv/summary.json`` when `seqfer cv` ran.

Resumable like a CV fold: each member's training state is kept in ``<model folder>.partial/`` (written at most
every :data:`~stages.learning.training.state.TRAIN_STATE_EVERY_S` seconds, keyed by the config and the data), so
a killed `seqfer train` continues where it stopped with the weights an uninterrupted run gives; that folder is
removed once the model folder is written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config
from pipeline.cv.reports import accuracy
from pipeline.cv.run import config_hash_of, cv_dir, resolve_device
from pipeline.data.labelled import LabelledData, load_labelled_data, split_fold
from pipeline.model_folder.folder import check_model_folder_target, cv_accuracy, write_model_folder
from pipeline.model_folder.init import appearance_init
from pipeline.runtime.output_folder import check_replaceable, claim_folder
from pipeline.runtime.progress import progress_bar
from pipeline.runtime.ray_start import ensure_ray
from pipeline.runtime.run_key import data_identity, run_key
from pipeline.train.distributed import train_member_on_ray
from stages.errors import StageError
from stages.learning.models import TwoStream
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.divergence import require_finite_weights
from stages.learning.training.fit import FitResult
from stages.learning.training.member import member_seed, network_name, train_member
from stages.learning.training.predict import predict_proba
from stages.learning.training.state import TRAIN_STATE_EVERY_S, Resume, train_state_file
from stages.learning.training.warm_start import AppearanceInit

log = logging.getLogger(__name__)

STATE_KIND = "train-state"
"""Marker kind of the ``<model folder>.partial/`` folder that holds an unfinished run's training states."""


def model_dir(cfg: Config) -> Path:
    """Where `seqfer train` writes its model folder: ``OUTPUT_DIR/model``."""
    return Path(cfg.output_dir) / "model"


def state_dir(out: Path) -> Path:
    """Where `seqfer train` keeps the training states of an unfinished model folder ``out``: ``<out>.partial``."""
    return out.parent / f"{out.name}.partial"


def deployment_fold(data: LabelledData) -> int:
    """The fold number no row has (the largest + 1, 0 without rows): `seqfer train`'s "fold" without test rows."""
    return int(data.folds.max()) + 1 if len(data.folds) else 0


def deployment_split(data: LabelledData, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices over ALL labelled subjects: :func:`split_fold` with a fold number no row
    has (:func:`deployment_fold`), so its test part is empty and its seeded draw of whole validation subjects is
    the CV one's. A dataset with its own split: its ``train`` and ``val`` rows (``val_fraction`` and ``seed``
    unused); its ``test`` rows are in neither."""
    if data.splits is not None:
        return np.flatnonzero(data.splits == "train"), np.flatnonzero(data.splits == "val")
    train_idx, val_idx, test_idx = split_fold(data.subjects, data.folds, deployment_fold(data), val_fraction, seed)
    assert len(test_idx) == 0
    return train_idx, val_idx


def run_train(cfg: Config, out_dir: Path | None = None, data: LabelledData | None = None) -> Path:
    """Preprocess (skipping cached work), train on all labelled subjects, write the model folder; returns it.

    Resumes the members' training from ``<out>.partial/`` (see the module doc), which is removed at the end."""
    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else model_dir(cfg)
    check_model_folder_target(out)  # refuse a folder that is not a model folder before any work is done
    check_replaceable(state_dir(out), STATE_KIND)
    data = data if data is not None else load_labelled_data(cfg, preprocess=True)
    if len(data.labels) < 3:
        raise StageError(
            f"training needs at least 3 usable labelled sequences; found {len(data.labels)} "
            f"({len(data.excluded)} excluded by preprocessing)"
        )
    device = resolve_device(cfg.cv.device)
    states = claim_folder(state_dir(out), STATE_KIND)
    key = run_key("train-member", config_hash_of(cfg), data_identity(data))
    n = cfg.train.ensemble
    bar = progress_bar(cfg.train.epochs * n, "train", unit="epoch")
    members, models, history = [], [], []
    init = appearance_init(cfg.model, data.classes)
    if cfg.train.workers > 1:
        ensure_ray(cfg.ray)  # the cluster ray.address names, or a local one
    try:
        for k in range(n):
            resume = Resume(states / train_state_file(k), f"{key}:{k}", TRAIN_STATE_EVERY_S)
            member, model, rows = _train_member(cfg, data, device, bar, k, resume, init)
            members.append(member)
            models.append(model)
            history += [{"member": k, **row} if n > 1 else row for row in rows]
    finally:
        bar.close()
    for k, model in enumerate(models):  # never a model folder from a diverged network
        name = network_name(None, k, n)
        require_finite_weights(model, f"training diverged{': ' + name if name else ''}; model folder {out} not written")
    write_model_folder(out, models, cfg, data.classes, _model_info(cfg, data, members, device), history=history)
    shutil.rmtree(states, ignore_errors=True)  # the model folder is whole: its training states are spent
    what = f"{len(models)} networks" if len(models) > 1 else "1 network"
    log.info(f"train: {what}; model folder {out} ({time.perf_counter() - start:.1f} s)")
    return out


def _used_rows(data: LabelledData) -> np.ndarray:
    """The rows training uses (train + validation): all of them, or a split dataset's ``train`` and ``val`` rows."""
    if data.splits is None:
        return np.arange(len(data.labels))
    return np.flatnonzero(np.isin(data.splits, ["train", "val"]))


def _model_info(cfg: Config, data: LabelledData, members: list[dict], device: str) -> dict:
    """The training facts of model.json and the model card (member 0's split and epochs, every member's facts).
    ``data`` counts the sequences training used: a split dataset's ``test`` rows are not among them."""
    first = members[0]
    used = _used_rows(data)
    counts = Counter(data.classes[i] for i in data.labels[used])
    split = {**first["split"], "val_fraction": cfg.train.val_fraction} if data.splits is None else first["split"]
    return {
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "format": cfg.data.format,
            "root": str(cfg.data.root),
            "manifest": str(cfg.manifest_path),
            "n_sequences": int(len(used)),
            "n_subjects": len(set(data.subjects[used])),
            "n_excluded": int(len(data.excluded)),
            "class_counts": {c: int(counts.get(c, 0)) for c in data.classes},
            # 1: trained on single images only, so prediction scores a longer input frame by frame (ModelBundle)
            "max_frames": int(data.n_frames[used].max()) if data.n_frames is not None and len(used) else None,
        },
        "split": split,
        "best_epoch": first["best_epoch"],
        "epochs_run": first["epochs_run"],
        "val_accuracy": first["val_accuracy"],
        "train_seconds": round(sum(m["train_seconds"] for m in members), 2),
        "members": members,
        "device": device,
        "cv": cv_accuracy(cv_dir(cfg), cfg),
    }


def _train_member(
    cfg: Config, data: LabelledData, device: str, bar: tqdm, k: int, resume: Resume, init: AppearanceInit | None
) -> tuple[dict, TwoStream, list[dict]]:
    """Train ensemble member ``k`` (the whole single-network run of :func:`member_seed`: its own validation
    subjects, initialisation and augmentation), resuming from ``resume``. Returns (its facts for model.json, the
    network, its history); ``bar`` advances by ``cfg.train.epochs`` whether or not it stopped early."""
    n, fold = cfg.train.ensemble, deployment_fold(data)
    seeds = member_seed(cfg.seed, k, fold)
    train_idx, val_idx = deployment_split(data, cfg.train.val_fraction, seeds.split)
    who = f"member {k + 1}/{n}: " if n > 1 else ""
    if data.splits is None:
        log.info(
            f"train: {who}{len(train_idx)} training and {len(val_idx)} validation sequences from "
            f"{len(set(data.subjects))} subjects on {device}"
        )
    else:
        log.info(f"train: {who}{_split_protocol(data, train_idx, val_idx)}; on {device}")
        if len(val_idx) == 0:
            log.warning("the dataset's split has no `val` rows: no early stopping, the last epoch is kept")
    done = bar.n

    def on_epoch(row: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{who}val acc {row['val_acc']:.3f} loss {row['val_loss']:.3f}")

    val = data.subset(val_idx)
    result = _fit_member(cfg, data.subset(train_idx), val, len(data.classes), device, k, fold, on_epoch, resume, init)
    bar.update(done + cfg.train.epochs - bar.n)  # early stopping: the unused epochs count as done for the ETA
    val_acc = accuracy(predict_proba(result.model, val, device=device), data.labels[val_idx])
    log.info(
        f"train: {who}best epoch {result.best_epoch}/{len(result.history)}, validation accuracy "
        f"{100 * val_acc:.1f}% ({len(val_idx)} sequences)"
    )
    member = {
        "seed": seeds.split,
        "fit_seed": seeds.fit,
        "split": _split_facts(data, train_idx, val_idx, seeds.split),
        "best_epoch": int(result.best_epoch),
        "epochs_run": len(result.history),
        "val_accuracy": val_acc,
        "train_seconds": round(result.seconds, 2),
        "precision": result.precision,
        **({"workers": cfg.train.workers} if cfg.train.workers > 1 else {}),
    }
    return member, result.model, result.history


def _fit_member(
    cfg: Config,
    train: ArrayDataset,
    val: ArrayDataset,
    n_classes: int,
    device: str,
    k: int,
    fold: int,
    on_epoch: Callable[[dict], None],
    resume: Resume,
    init: AppearanceInit | None,
) -> FitResult:
    """Member ``k``'s training: in this process (``train.workers`` 1, resuming from ``resume``), or data-parallel
    on Ray Train (:func:`~pipeline.train.distributed.train_member_on_ray`, checkpointing into ``resume``'s folder;
    ``on_epoch`` is then not called: its bar advances at the end)."""
    where = network_name(None, k, cfg.train.ensemble)
    if cfg.train.workers > 1:
        args = {"seed": cfg.seed, "member": k, "fold": fold, "where": where, "appearance_init": init}
        return train_member_on_ray(
            cfg.model, n_classes, train, val, cfg.train, args, device, resume.path.parent, resume.key
        )
    return train_member(
        cfg.model,
        n_classes,
        train,
        val,
        cfg.train,
        cfg.seed,
        k,
        fold,
        device,
        on_epoch,
        resume,
        where=where,
        appearance_init=init,
    )


def _split_protocol(data: LabelledData, train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    """A split dataset's protocol in words: "dataset split: train N / val M; test not used" (+ rows without a
    split, which are not used either)."""
    assert data.splits is not None
    unsplit = int(np.sum(data.splits == ""))
    return f"dataset split: train {len(train_idx)} / val {len(val_idx)}; test not used" + (
        f"; {unsplit} sequence(s) without a split not used" if unsplit else ""
    )


def _split_facts(data: LabelledData, train_idx: np.ndarray, val_idx: np.ndarray, seed: int) -> dict:
    """model.json's ``split`` of one member: counts and validation subjects (the seeded draw of CV datasets), or
    for a dataset with its own split the protocol, counts and the number of ``test`` rows left unused."""
    facts = {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_train_subjects": len(set(data.subjects[train_idx])),
        "n_val_subjects": len(set(data.subjects[val_idx])),
    }
    if data.splits is not None:
        return {
            "protocol": _split_protocol(data, train_idx, val_idx),
            **facts,
            "n_test_not_used": int(np.sum(data.splits == "test")),
        }
    return {**facts, "val_subjects": sorted(set(data.subjects[val_idx].tolist())), "seed": seed}
