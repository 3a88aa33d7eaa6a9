"""Train and test one CV fold (every ensemble member of it), in this process or as a Ray actor's task."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cv.reports import accuracy
from pipeline.data.labelled import LabelledData, split_fold
from pipeline.errors import USER_ERRORS
from pipeline.model_folder.format import member_file, member_files
from pipeline.model_folder.init import appearance_init
from stages.atomic_io import atomic_path, atomic_write_text
from stages.learning.models.config import ModelConfig, TrainConfig
from stages.learning.training.checkpoint import save_checkpoint
from stages.learning.training.fit import FitResult
from stages.learning.training.member import member_seed, train_member
from stages.learning.training.predict import predict_proba
from stages.learning.training.state import TRAIN_STATE_EVERY_S, Resume, train_state_file
from stages.learning.training.warm_start import AppearanceInit

log = logging.getLogger(__name__)


@dataclass
class FoldMember:
    """One trained ensemble member of a fold: its (train, validation, test) rows, fit result, test
    probabilities [n_test, K], history table and facts for ``result.json``."""

    split: tuple[np.ndarray, np.ndarray, np.ndarray]
    result: FitResult
    proba: np.ndarray
    history: pd.DataFrame
    facts: dict


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
    seed + k (its own validation subjects, from this fold's training subjects; see
    :func:`~stages.learning.training.member.member_seed`); the test probabilities are their mean. Each member
    resumes from its own training state; the split, epoch and subject fields of the result are member 0's,
    ``members`` has every member's seed, best epoch, test accuracy and test probabilities."""
    start = time.perf_counter()
    fold_path = Path(fold_dir)
    fold_path.mkdir(parents=True, exist_ok=True)
    mcfg, tcfg = ModelConfig.model_validate(model_cfg), TrainConfig.model_validate(train_cfg)
    for stale in member_files(fold_path)[tcfg.ensemble :]:  # members of an earlier, larger ensemble
        stale.unlink()
    init = appearance_init(mcfg, data.classes)
    members = [
        train_fold_member(fold, k, data, mcfg, tcfg, val_fraction, seed, device, fold_path, config_hash, init)
        for k in range(tcfg.ensemble)
    ]
    train_idx, val_idx, test_idx = members[0].split
    proba = np.mean([m.proba for m in members], axis=0)
    with atomic_path(fold_path / "history.csv") as tmp:
        pd.concat([m.history for m in members], ignore_index=True).to_csv(tmp, index=False)
    out = {
        "fold": fold,
        "accuracy": accuracy(proba, data.labels[test_idx]),
        "n_test": int(len(test_idx)),
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "best_epoch": int(members[0].result.best_epoch),
        "seconds": time.perf_counter() - start,
        "device": device,
        "config_hash": config_hash,
        "test_ids": data.sequence_ids[test_idx].tolist(),
        "proba": proba.tolist(),
        "train_subjects": sorted(set(data.subjects[train_idx])),
        "val_subjects": sorted(set(data.subjects[val_idx])),
        "test_subjects": sorted(set(data.subjects[test_idx])),
        "members": [m.facts for m in members],
    }
    atomic_write_text(fold_path / "result.json", json.dumps(out))
    for k in range(tcfg.ensemble):  # the fold is finished: its result replaces the training states
        (fold_path / train_state_file(k)).unlink(missing_ok=True)
    return out


def train_fold_member(
    fold: int,
    k: int,
    data: LabelledData,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    val_fraction: float,
    seed: int,
    device: str,
    fold_path: Path,
    config_hash: str,
    init: AppearanceInit | None = None,
) -> FoldMember:
    """Train ensemble member ``k`` of ``fold`` (resuming from its training state in ``fold_path``; its appearance
    stream starting from ``init`` when given), test it, and write its checkpoint (and first-stage history) there."""
    seeds = member_seed(seed, k, fold)
    train_idx, val_idx, test_idx = split_fold(data.subjects, data.folds, fold, val_fraction, seeds.split)
    key = f"{config_hash}:{fold}" + (f":{k}" if k else "")
    result = train_member(
        mcfg,
        len(data.classes),
        data.subset(train_idx),
        data.subset(val_idx),
        tcfg,
        seed,
        k,
        fold,
        device=device,
        resume=Resume(fold_path / train_state_file(k), key, TRAIN_STATE_EVERY_S),  # a killed fold resumes
        appearance_init=init,
    )
    proba = predict_proba(result.model, data.subset(test_idx), device=device)
    history = pd.DataFrame(result.history)
    history.insert(0, "fold", fold)
    if tcfg.ensemble > 1:
        history.insert(1, "member", k)
    if result.pretrain_history:
        with atomic_path(fold_path / ("pretrain_history.csv" if k == 0 else f"pretrain_history.{k}.csv")) as tmp:
            pd.DataFrame(result.pretrain_history).assign(fold=fold).to_csv(tmp, index=False)
    save_checkpoint(
        fold_path / member_file(k),
        result.model,
        mcfg,
        data.classes,
        dict(fold=fold, member=k, seed=seeds.split, best_epoch=result.best_epoch, config_hash=config_hash),
    )
    facts = {
        "member": k,
        "seed": seeds.split,
        "best_epoch": int(result.best_epoch),
        "precision": result.precision,
        "accuracy": accuracy(proba, data.labels[test_idx]),
        "val_subjects": sorted(set(data.subjects[val_idx])),
        "proba": proba.tolist(),
    }
    return FoldMember((train_idx, val_idx, test_idx), result, proba, history, facts)


FOLD_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, OSError, UnicodeError)
"""The errors a fold returns as its result (:meth:`FoldWorker.train`): those the CLI turns into one line."""


class FoldWorker:
    """Trains folds of one CV run: in this process, or as a Ray actor (the data shipped to it once).

    ``args``: (model config, train config (both JSON dicts), val_fraction, seed, device) of :func:`train_fold`;
    ``out``: the run folder (fold K writes ``out/fold_K``)."""

    def __init__(self, data: LabelledData, args: tuple, out: str, config_hash: str) -> None:
        self.data, self.args, self.out, self.config_hash = data, args, out, config_hash

    def train(self, fold: int) -> dict | Exception:
        """:func:`train_fold` of ``fold``: its result, or the user error it raised (a diverged network, a full
        disk) RETURNED, so the caller gets it as itself, not as Ray's wrapper of a remote traceback (and Ray logs
        no "unhandled error" for a fold whose result is dropped when the run stops). A bug still raises."""
        try:
            return train_fold(fold, self.data, *self.args, str(Path(self.out) / f"fold_{fold}"), self.config_hash)
        except FOLD_ERRORS as exc:
            return exc


def read_fold_result(path: Path) -> dict | None:
    """A finished fold's ``result.json``, or None when it is absent, empty or damaged (that fold is re-run)."""
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.info(f"cv: {path} is unreadable ({type(exc).__name__}); that fold is re-run")
        return None
    keys = ("config_hash", "fold", "accuracy", "test_ids", "proba")
    if not isinstance(result, dict) or any(k not in result for k in keys):
        log.info(f"cv: {path} is incomplete or from an older seqfer; that fold is re-run")
        return None
    return result
