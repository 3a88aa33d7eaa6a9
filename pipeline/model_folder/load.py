"""Read a model folder or CV run folder back as one ModelBundle: its networks, classes and preprocessing settings.

The bundle is made from the checkpoints' headers (:mod:`stages.learning.training.checkpoint_header`): classes,
model input settings and the fingerprint need no torch. The networks load on first use of
:attr:`ModelBundle.models`, so a `seqfer predict` / `evaluate` driver that hands prediction to Ray workers (each
loading its own) never imports torch: about 1.5 s and 250 MB less before the first worker starts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config, load_config
from pipeline.model_folder.fingerprint import changed_keys, model_fingerprint
from pipeline.model_folder.format import CONFIG_FILE, INFO_FILE, fold_files, member_files, read_json, resolve_model_path
from pipeline.preprocess.to_stages import sequence_config
from stages.errors import StageError
from stages.learning.models.config import ModelConfig, ModelInputConfig
from stages.learning.training.checkpoint_header import read_checkpoint_header
from stages.preprocess.sequence import SequenceConfig

if TYPE_CHECKING:
    from stages.learning.models import TwoStream

PREDICTION_ONLY_KEYS = ("min_face_ratio", "min_frames")
"""Preprocessing settings prediction may change without a warning: they gate inputs, not what the model sees."""


@dataclass
class ModelBundle:
    """A model's networks and the settings prediction must reproduce.

    ``models``: the model folder's members (one network unless trained with ``train.ensemble``), or every
    member of every fold (CV run folder); eval mode, CPU; loaded on first use. Prediction averages their
    probabilities.
    ``sequence``: frames -> SequenceRecord settings (training's, with any prediction overrides applied);
    ``model_input``: record -> tensors settings (from the weights' own config, never overridden);
    ``model_config``: the networks' config, from the first checkpoint's header (all agree on classes and inputs);
    ``extras``: appearance channels the network appends (stages.learning.inputs.extras), as in training.
    """

    classes: list[str]
    sequence: SequenceConfig
    model_input: ModelInputConfig
    model_config: ModelConfig
    config: Config
    kind: str  # "model" | "cv"
    path: Path
    weight_files: list[Path]
    info: dict = field(default_factory=dict)
    _networks: tuple[list[TwoStream], tuple[str, ...]] | None = field(default=None, init=False, repr=False)

    @property
    def models(self) -> list[TwoStream]:
        """The networks, loaded and checked (weights that match their config and are finite) on first use;
        :class:`StageError` naming the file otherwise."""
        if self._networks is None:
            self._networks = _load_networks(self.weight_files, self.classes, self.model_input)
        return self._networks[0]

    @property
    def extras(self) -> tuple[str, ...]:
        """The appearance extras the networks declared (loads them, as :attr:`models`)."""
        self.models  # noqa: B018 - loads the networks once
        assert self._networks is not None
        return self._networks[1]

    @property
    def image_model(self) -> bool:
        """Whether every sequence it was trained on was a single image (model.json's ``data.max_frames`` is 1,
        written since 2026-12-07): such a model knows no sequences, so prediction scores each frame of a longer
        input as an image and averages (:class:`~pipeline.predict.predictor.Predictor`). False for CV run folders
        and older model folders: their inputs are scored as sequences, as they were trained."""
        data = self.info.get("data") if self.kind == "model" else None
        return isinstance(data, dict) and data.get("max_frames") == 1

    @property
    def trained_precision(self) -> str:
        """The precision its networks trained in: the members' resolved ``precision`` (model.json, or each fold's
        result.json in a CV run folder; bfloat16 if any member trained in it), else ``train.precision`` of its
        config (older folders; may be ``auto``)."""
        members = self.info.get("members")
        used = {m.get("precision") for m in members if isinstance(m, dict)} if isinstance(members, list) else set()
        if used and used <= {"float32", "bfloat16"}:
            return "bfloat16" if "bfloat16" in used else "float32"
        return self.config.train.precision

    @property
    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the weight files' bytes and the preprocessing settings."""
        return model_fingerprint(self.weight_files, self.sequence, self.model_input)

    def describe(self) -> str:
        """One line for a person: the folder, what kind it is, how many networks, the classes."""
        n = len(self.weight_files)
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


def _read_headers(files: list[Path]) -> tuple[list[str], ModelConfig]:
    """(classes, model config of the first) from the checkpoints' headers, without torch; :class:`StageError`
    when one is unreadable or the networks disagree on classes or inputs (they could not be averaged)."""
    classes, model_cfg = None, None
    for file in files:
        header = read_checkpoint_header(file)
        if classes is not None and header.classes != classes:
            raise StageError(f"{file}: classes {header.classes} differ from the other networks' {classes}")
        if model_cfg is not None and header.model_config.input != model_cfg.input:
            raise StageError(f"{file}: model input settings differ from the other networks'")
        classes, model_cfg = classes or header.classes, model_cfg or header.model_config
    return list(classes), model_cfg


def _load_networks(
    files: list[Path], classes: list[str], input_cfg: ModelInputConfig
) -> tuple[list[TwoStream], tuple[str, ...]]:
    """(networks, extras) of ``files``, whose headers gave ``classes`` and ``input_cfg``; :class:`StageError`
    when a network's weights are unusable, or the networks disagree on the extras they append."""
    from stages.learning.inputs.extras import needs_of
    from stages.learning.training.checkpoint import load_checkpoint

    models, extras = [], None
    for file in files:
        model, mcfg, model_classes, _extra = load_checkpoint(file)
        model_extras = needs_of(mcfg).extras
        if model_classes != classes or mcfg.input != input_cfg:
            raise StageError(f"{file}: changed since its model folder was read; run the command again")
        if extras is not None and model_extras != extras:
            raise StageError(f"{file}: model input settings differ from the other networks'")
        models.append(model)
        extras = model_extras
    return models, extras


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
    classes, model_cfg = _read_headers(files)  # the networks load on first use (ModelBundle.models)
    info = read_json(folder / INFO_FILE, "model info") if kind == "model" else _cv_info(folder)
    sequence = sequence_config(cfg)
    changed = changed_keys(sequence_config(trained_cfg).model_dump(mode="json"), sequence.model_dump(mode="json"))
    changed = [k for k in changed if k not in PREDICTION_ONLY_KEYS]
    if changed:
        warnings.warn(f"prediction preprocessing differs from training in: {', '.join(changed)}", stacklevel=2)
    return ModelBundle(
        classes=classes,
        sequence=sequence,
        model_input=model_cfg.input,
        model_config=model_cfg,
        config=cfg,
        kind=kind,
        path=folder,
        weight_files=files,
        info=info,
    )


def _cv_info(folder: Path) -> dict:
    """A CV run folder's facts: its summary (when written) and every finished fold's members, in fold order."""
    summary = folder / "summary.json"
    info = {"cv_summary": read_json(summary, "CV summary")} if summary.is_file() else {}
    results = [f.parent / "result.json" for f in fold_files(folder)]
    members = [m for r in results if r.is_file() for m in read_json(r, "fold result").get("members", [])]
    return {**info, "members": members} if members else info
