"""``model.appearance.init``: read the network a new appearance stream starts from (a ready model or a model
folder) and check that it fits.

The stage side (:mod:`stages.learning.training.warm_start`) copies weights; this side knows model folders: it
resolves the name or path (:func:`~pipeline.model_folder.format.resolve_model_path`), reads member 0's
checkpoint, checks that the source's appearance settings are the new network's, and matches the two class lists
through the class aliases (``angry`` = ``anger``). :func:`init_identity` is the source's weight fingerprint, which
the run keys include, so a result trained from other weights is never reused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from data_manifests.scan_common import canonical_class
from pipeline.model_folder.format import member_files, resolve_model_path
from pipeline.model_folder.ready import ready_model_dir
from stages.errors import StageError
from stages.learning.models import ModelConfig
from stages.learning.training.checkpoint import load_checkpoint
from stages.learning.training.warm_start import AppearanceInit, appearance_network

ARCHITECTURE_KEYS = ("name", "channels", "convs_per_block", "skip_dim", "normalize")
"""The ``model.appearance`` settings a network started from another must share with it."""


def init_source(model_cfg: ModelConfig) -> Path | None:
    """Member 0's weight file of ``model.appearance.init``, or None when it is not set; :class:`StageError` when
    the name or folder is not a model folder (a CV run folder holds many networks: train one with `seqfer train`)."""
    source = model_cfg.appearance.init
    if source is None:
        return None
    if model_cfg.streams == "geometry":
        raise StageError(f"model.appearance.init: {source!r} is set but model.streams is geometry")
    kind, folder = resolve_model_path(source)
    if kind != "model":
        raise StageError(f"model.appearance.init: {folder} is a CV run folder; give a model folder (`seqfer train`)")
    return member_files(folder)[0]


def appearance_init(model_cfg: ModelConfig, classes: list[str]) -> AppearanceInit | None:
    """The weights ``model.appearance.init`` names, for a network of ``model_cfg`` with output ``classes``; None
    when it is not set. :class:`StageError` when the source's appearance settings differ (naming each, with the
    source's value) or its network has no appearance stream."""
    weights = init_source(model_cfg)
    if weights is None:
        return None
    source = str(model_cfg.appearance.init)
    net, source_cfg, source_classes, _ = load_checkpoint(weights)
    source_net = appearance_network(net)
    if source_net is None:
        raise StageError(f"model.appearance.init: {source} has no appearance stream")
    mine, theirs = model_cfg.appearance.model_dump(), source_cfg.appearance.model_dump()
    differ = [
        f"model.appearance.{k}: {theirs[k]!r} (here {mine[k]!r})" for k in ARCHITECTURE_KEYS if mine[k] != theirs[k]
    ]
    if differ:
        raise StageError(f"model.appearance.init: {source} was trained with " + "; ".join(differ) + "; set them so")
    state = {k: v.detach().clone() for k, v in source_net.state_dict().items()}
    return AppearanceInit(state=state, class_rows=class_rows(source_classes, classes), source=source)


def class_rows(source_classes: list[str], classes: list[str]) -> tuple[int | None, ...]:
    """For each of ``classes``, the index of the same expression in ``source_classes`` (names compared through
    :func:`~data_manifests.scan_common.canonical_class`), or None."""
    index = {canonical_class(c) or c: i for i, c in enumerate(source_classes)}
    return tuple(index.get(canonical_class(c) or c) for c in classes)


def init_identity(model_cfg: ModelConfig) -> str | None:
    """sha256 (first 16 hex digits) of the weights ``model.appearance.init`` names, None when it is not set."""
    weights = init_source(model_cfg)
    if weights is None:
        return None
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def pin_init(model_cfg: ModelConfig) -> ModelConfig:
    """``model_cfg`` with a relative ``model.appearance.init`` folder made absolute (a ready model's name is kept),
    for workers that may run elsewhere than this process's folder."""
    source = model_cfg.appearance.init
    if source is None or (ready_model_dir(source) is not None and not Path(source).exists()):
        return model_cfg
    appearance = model_cfg.appearance.model_copy(update={"init": str(Path(source).absolute())})
    return model_cfg.model_copy(update={"appearance": appearance})
