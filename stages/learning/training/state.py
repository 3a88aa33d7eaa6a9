"""Resumable training state: what a training run changes epoch by epoch, its best epoch so far, and their files."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from stages.atomic_io import atomic_path
from stages.learning.models import TwoStream
from stages.learning.training.divergence import nonfinite_tensors

log = logging.getLogger(__name__)

TRAIN_STATE_FILE = "train_state.pt"
"""Training state of ensemble member 0 of an unfinished run (see :func:`train_state_file`)."""

TRAIN_STATE_EVERY_S = 10.0
"""A run's training state is written at most this often (:attr:`Resume.every_s`): a killed run repeats at most
10 s of training, and a 0.3 s epoch does not spend a tenth of its time writing the state."""


def train_state_file(k: int) -> str:
    """File name of the training state of ensemble member ``k`` of an unfinished run: ``train_state.pt`` for
    member 0, ``train_state.K.pt`` for the others."""
    return TRAIN_STATE_FILE if k == 0 else f"train_state.{k}.pt"


@dataclass(frozen=True)
class Resume:
    """Where a training run keeps its state (``path``), the caller's ``key`` of its data and settings (a state
    with another key is ignored), and ``every_s``: the state is written once that many seconds have passed
    since the last write, and after the final epoch (0: after every epoch)."""

    path: Path
    key: str
    every_s: float = TRAIN_STATE_EVERY_S


@dataclass
class BestEpoch:
    """The best epoch so far: its selection ``key`` (higher is better), 1-based ``epoch``, the judged network's
    weights (``state``), and ``stale``: epochs since it."""

    key: tuple[float, float] = (-math.inf, -math.inf)
    epoch: int = 0
    state: dict | None = None
    stale: int = 0

    def update(self, key: tuple[float, float], epoch: int, kept: torch.nn.Module, patience: int) -> bool:
        """Record ``epoch`` with selection ``key`` and judged network ``kept``; True when training should stop
        (``patience`` epochs without a better key)."""
        if key > self.key:
            self.key, self.epoch, self.stale = key, epoch, 0
            self.state = copy.deepcopy(kept.state_dict())
            return False
        self.stale += 1
        return self.stale >= patience


@dataclass
class TrainingRun:
    """The objects one training run changes epoch by epoch; a resumed run restores every one of them."""

    model: TwoStream
    ema: AveragedModel | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    aug_gen: torch.Generator
    rng: np.random.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    best: BestEpoch = field(default_factory=BestEpoch)

    @property
    def kept(self) -> torch.nn.Module:
        """What validation judges and the best state holds: the weight average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def snapshot(self, key: str, epoch: int, stopped: bool) -> dict:
        """The whole state after ``epoch`` (tensors and plain values; ``torch``'s global generator included)."""
        return {
            "key": key,
            "epoch": epoch,
            "stopped": stopped,
            "model": self.model.state_dict(),
            **({} if self.ema is None else {"ema": self.ema.state_dict()}),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else {},
            "torch_rng": torch.get_rng_state(),
            "aug_rng": self.aug_gen.get_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "history": self.history,
            "best_state": self.best.state,
            "best_epoch": self.best.epoch,
            "best_key": list(self.best.key),
            "stale": self.best.stale,
        }

    def restore(self, saved: dict) -> tuple[int, bool]:
        """Load a :meth:`snapshot`; returns (its last epoch, whether training had stopped early)."""
        self.model.load_state_dict(saved["model"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.opt.load_state_dict(saved["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        self.aug_gen.set_state(saved["aug_rng"])
        self.rng.bit_generator.state = saved["numpy_rng"]
        self.history = list(saved["history"])
        best_key, best_epoch, stale = tuple(saved["best_key"]), int(saved["best_epoch"]), int(saved["stale"])
        self.best = BestEpoch(best_key, best_epoch, saved["best_state"], stale)
        return int(saved["epoch"]), bool(saved["stopped"])


class StateSaver:
    """Saves and restores a :class:`TrainingRun` for :class:`Resume` (nothing at all without one)."""

    def __init__(self, resume: Resume | None, since: float) -> None:
        """``since``: the :func:`time.perf_counter` time the write interval counts from."""
        self.resume, self.last = resume, since

    def restore(self, run: TrainingRun, epochs: int) -> int:
        """Load the saved state into ``run`` when there is one with the right key; returns the first epoch to run
        (``epochs + 1`` when the saved run had finished or stopped early)."""
        saved = None if self.resume is None else load_train_state(self.resume.path, self.resume.key)
        if saved is None:
            return 1
        epoch, stopped = run.restore(saved)
        return epochs + 1 if stopped else epoch + 1

    def after_epoch(self, run: TrainingRun, epoch: int, stopped: bool, final: bool) -> None:
        """Write the state after ``epoch`` when it is the ``final`` one or the interval has passed."""
        if self.resume is None:
            return
        if final or time.perf_counter() - self.last >= self.resume.every_s:
            self.last = time.perf_counter()
            save_train_state(self.resume.path, run.snapshot(self.resume.key, epoch, stopped))


def save_train_state(path: Path, state: dict) -> None:
    """Write a training state atomically (torch.save of tensors and plain values, read back weights_only)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: Path | None, key: str) -> dict | None:
    """The training state at ``path`` when it exists, loads as plain data (``weights_only``: nothing arbitrary is
    unpickled), has ``key`` and only finite weights; else None (training starts from epoch 1). A state holding NaN
    or infinite tensors (weights, averages, optimiser moments) is damaged: resuming from it would go on from a
    diverged network."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign file: start over rather than fail the run
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        return None
    bad = nonfinite_tensors(state)
    if bad:
        log.warning(f"{path}: the training state holds non-finite numbers ({bad[0]}); training starts over")
        return None
    return state
