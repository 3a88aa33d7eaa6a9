"""One ensemble member's training, the one path `seqfer cv`, `train` and `compare` share, and its seeding rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from stages.learning.models import ModelConfig, TrainConfig
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.fit import FitResult, fit
from stages.learning.training.loop import Shard
from stages.learning.training.state import Resume
from stages.learning.training.warm_start import AppearanceInit


class MemberSeeds(NamedTuple):
    """The seeds of one ensemble member on one fold: ``split`` draws its validation subjects, ``fit`` fixes its
    weight initialisation, shuffling, dropout and augmentation (:func:`~stages.learning.training.fit.fit`)."""

    split: int
    fit: int


def member_seed(seed: int, member: int, fold: int) -> MemberSeeds:
    """THE seeding rule of ensemble members (``TrainConfig.ensemble``): member k of a run at ``seed`` draws its
    validation subjects with seed + k and trains with fit seed (seed + k) * 1000 + fold. So member 0 is the
    single-network run, an ensemble of n extends the one of n - 1, and every fold trains differently.
    `seqfer train` has no test fold: its ``fold`` is the fold number no sequence has
    (:func:`pipeline.train.run.deployment_split`)."""
    split = seed + member
    return MemberSeeds(split=split, fit=split * 1000 + fold)


def network_name(fold: int | None, member: int, ensemble: int) -> str:
    """How errors name one network of a run: "fold 3", "fold 3, member 2/3" (``member`` is 0-based, named only
    when ``ensemble`` > 1), "member 2/3" with no ``fold`` (`seqfer train`), "" for the only network."""
    parts = [] if fold is None else [f"fold {fold}"]
    if ensemble > 1:
        parts.append(f"member {member + 1}/{ensemble}")
    return ", ".join(parts)


def train_member(
    model_cfg: ModelConfig,
    n_classes: int,
    train: ArrayDataset,
    val: ArrayDataset | None,
    train_cfg: TrainConfig,
    seed: int,
    member: int,
    fold: int,
    device: str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
    resume: Resume | None = None,
    where: str | None = None,
    appearance_init: AppearanceInit | None = None,
    shard: Shard | None = None,
) -> FitResult:
    """Train ensemble ``member`` of a run at ``seed`` on ``fold``: :func:`~stages.learning.training.fit.fit` with
    the fit seed of :func:`member_seed` (the caller draws ``train`` / ``val`` with its ``split`` seed).

    ``resume``: where its training state is kept, so a killed run continues after its last saved epoch with the
    result an uninterrupted one gives (None: no state is written). ``where``: how errors name this network (None:
    :func:`network_name` of ``fold`` and ``member``, the ensemble size taken from ``train_cfg``); ``appearance_init``:
    the weights the appearance stream starts from (``model.appearance.init``; the same for every member); a loss
    that turns NaN or infinite raises :class:`~stages.learning.training.divergence.TrainingDiverged` naming it and
    the epoch. ``shard``: this process's share of a data-parallel training of the member (every process calls
    with the same arguments; :class:`~stages.learning.training.loop.Shard`; None: one process).
    Returns the best validation epoch's network
    (eval mode) and its facts: best epoch, history, seconds, precision, first-stage history."""
    return fit(
        model_cfg,
        n_classes,
        train,
        val,
        train_cfg,
        seed=member_seed(seed, member, fold).fit,
        device=device,
        on_epoch=on_epoch,
        resume_path=None if resume is None else resume.path,
        resume_key="" if resume is None else resume.key,
        save_every_s=0.0 if resume is None else resume.every_s,
        where=network_name(fold, member, train_cfg.ensemble) if where is None else where,
        appearance_init=appearance_init,
        shard=shard,
    )
