"""Read a model folder or CV run folder back as one ModelBundle: its networks, classes and preprocessing settings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.model_folder.fingerprint import changed_keys, model_fingerprint
from pipeline.model_folder.format import CONFIG_FILE, INFO_FILE, fold_files, member_files, read_json, resolve_model_path
from pipeline.preprocess.to_stages import sequence_config
from stages.errors import StageError
from stages.learning.inputs.extras import needs_of
from stages.learning.models import ModelInputConfig, TwoStream
from stages.learning.training.checkpoint import load_checkpoint
from stages.preprocess.sequence import SequenceConfig

PREDICTION_ONLY_KEYS = ("min_face_ratio", "min_frames")
"""Preprocessing settings prediction may change without a warning: they gate inputs, not what the model sees."""


@dataclass
class ModelBundle:
    """Loaded model(s) and the settings prediction must reproduce.

    ``models``: the model folder's members (one network unless trained with ``train.ensemble``), or every
    member of every fold (CV run folder); eval mode, CPU. Prediction averages their probabilities.
    ``sequence``: frames -> SequenceRecord settings (training's, with any prediction overrides applied);
    ``model_input``: record -> tensors settings (from the weights' own config, never overridden);
    ``extras``: appearance channels the network appends (stages.learning.inputs.extras), as in training.
    """

    models: list[TwoStream]
    classes: list[str]
    sequence: SequenceConfig
    model_input: ModelInputConfig
    extras: tuple[str, ...]
    config: Config
    kind: str  # "model" | "cv"
    path: Path
    weight_files: list[Path]
    info: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the weight files' bytes and the preprocessing settings."""
        return model_fingerprint(self.weight_files, self.sequence, self.model_input)

    def describe(self) -> str:
        """One line for a person: the folder, what kind it is, how many networks, the classes."""
        n = len(self.models)
        if self.kind == "model":
            what = "model folder" + (f", ensemble of {n} networks" if n > 1 else "")
        else:
            what = f"CV run folder, ensemble of {n} networks from {len(set(p.parent for p in self.weight_files))} folds"
        return f"{self.path} ({what}; classes: {', '.join(self.classes)})"


def _check_fold_hashes(files: list[Path]) -> None:
    hashes = set()
    for f in files:
        result = f.parent / "result.json"
        if result.is_file():
            hashes.add(read_json(result, "fold result").get("config_hash"))
    if len(hashes) > 1:
        warnings.warn(
            f"{files[0].parent.parent}: folds were trained with {len(hashes)} different configs; "
            "they are ensembled anyway",
            stacklevel=3,
        )


def _load_networks(files: list[Path]) -> tuple[list[TwoStream], list[str], ModelInputConfig, tuple[str, ...]]:
    """(networks, classes, model input settings, extras) of ``files``; :class:`StageError` when the networks
    disagree on classes or inputs (they could not be averaged)."""
    models, classes, input_cfg, extras = [], None, None, None
    for file in files:
        model, mcfg, model_classes, _extra = load_checkpoint(file)
        model_extras = needs_of(mcfg).extras
        if classes is not None and model_classes != classes:
            raise StageError(f"{file}: classes {model_classes} differ from the other networks' {classes}")
        if input_cfg is not None and (mcfg.input != input_cfg or model_extras != extras):
            raise StageError(f"{file}: model input settings differ from the other networks'")
        models.append(model)
        classes, input_cfg, extras = model_classes, mcfg.input, model_extras
    return models, list(classes), input_cfg, extras


def load_model_bundle(path: Path | str, overrides: list[str] | None = None) -> ModelBundle:
    """Load a model folder or CV run folder (see :mod:`pipeline.model_folder.format`) with ``--set`` overrides
    on its config.

    Overrides may change how prediction runs (``ray.workers``, ``preprocess.min_face_ratio``, the landmark
    detector...); a change to the preprocessing the model was trained with is allowed but warned about.
    ``model.*`` / ``train.*`` cannot change (the weights are fixed): :class:`StageError`.
    """
    overrides = list(overrides or [])
    bad = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] in ("model", "train")]
    if bad:
        raise StageError(f"--set {', '.join(bad)}: model and train settings are fixed by the trained weights")
    kind, folder = resolve_model_path(path)
    trained_cfg = load_config(folder / CONFIG_FILE)
    cfg = load_config(folder / CONFIG_FILE, overrides) if overrides else trained_cfg
    if kind == "model":
        files = member_files(folder)
    else:
        files = [member for f in fold_files(folder) for member in member_files(f.parent)]
    if kind == "cv":
        _check_fold_hashes(files)
    models, classes, input_cfg, extras = _load_networks(files)
    info = read_json(folder / INFO_FILE, "model info") if kind == "model" else _cv_info(folder)
    sequence = sequence_config(cfg)
    changed = changed_keys(sequence_config(trained_cfg).model_dump(mode="json"), sequence.model_dump(mode="json"))
    changed = [k for k in changed if k not in PREDICTION_ONLY_KEYS]
    if changed:
        warnings.warn(f"prediction preprocessing differs from training in: {', '.join(changed)}", stacklevel=2)
    return ModelBundle(
        models=models,
        classes=classes,
        sequence=sequence,
        model_input=input_cfg,
        extras=extras,
        config=cfg,
        kind=kind,
        path=folder,
        weight_files=files,
        info=info,
    )


def _cv_info(folder: Path) -> dict:
    summary = folder / "summary.json"
    return {"cv_summary": read_json(summary, "CV summary")} if summary.is_file() else {}
