"""Model folders (what `seqfer train` writes) and CV run folders, read back as one :class:`ModelBundle`.

A model folder holds everything prediction needs and a person wants to know::

    model.safetensors   weights + model config + classes (stages.learning.training.fit.save_checkpoint; never pickle)
    model.K.safetensors ensemble members 1, 2, ... (train.ensemble > 1); probabilities averaged with member 0
    model.json          machine-readable facts: format/version, classes, the preprocessing settings it was
                        trained with (SequenceConfig + ModelInputConfig), training and CV figures, versions
    config.yaml         the full effective config of the training run (prediction reads its preprocess and
                        ray sections, with --set overrides)
    classes.txt         one class name per line, in output order
    history.csv         per-epoch training curve
    README.md           the model card

A CV run folder (``OUTPUT_DIR/cv`` of `seqfer cv`) is read as an ensemble: every member of every finished
``fold_K/`` (``model.safetensors``, ``model.1.safetensors``, ...), probabilities averaged. ``OUTPUT_DIR`` itself
is accepted too (its ``model/`` when present, else its ``cv/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import Config, load_config
from pipeline.runtime.output_folder import check_replaceable, marker_kind, write_marker
from stages.errors import StageError
from stages.learning.inputs.extras import needs_of
from stages.learning.models import ModelInputConfig, TwoStream
from stages.learning.training.fit import load_checkpoint
from stages.preprocess.sequence import SequenceConfig

MODEL_FORMAT = "seqfer-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
CONFIG_FILE = "config.yaml"
MODEL_KIND = "model"
MODEL_FILES = (WEIGHTS_FILE, INFO_FILE, CONFIG_FILE, "classes.txt", "history.csv", "README.md")


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
        digest = hashlib.sha256()
        for path in self.weight_files:
            digest.update(path.read_bytes())
        digest.update(self.sequence.model_dump_json().encode())
        digest.update(self.model_input.model_dump_json().encode())
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        n = len(self.models)
        if self.kind == "model":
            what = "model folder" + (f", ensemble of {n} networks" if n > 1 else "")
        else:
            what = f"CV run folder, ensemble of {n} networks from {len(set(p.parent for p in self.weight_files))} folds"
        return f"{self.path} ({what}; classes: {', '.join(self.classes)})"


def sequence_config_of(cfg: Config) -> SequenceConfig:
    """The stage settings of a config alone (output locations dropped)."""
    return SequenceConfig.model_validate(cfg.preprocess.model_dump(include=set(SequenceConfig.model_fields)))


def versions() -> dict[str, str]:
    """Versions recorded in model folders: seqfer, python, torch, numpy, platform."""
    import torch

    try:
        from importlib.metadata import version

        seqfer = version("seqfer")
    except Exception:  # not pip-installed: a plain checkout
        seqfer = "0.1.0 (checkout)"
    return {
        "seqfer": seqfer,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


# ------------------------------------------------------------------------------------------------ reading


def _is_model_folder(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def member_file(k: int) -> str:
    """File name of ensemble member ``k`` (0-based) in a model folder or CV fold folder."""
    return WEIGHTS_FILE if k == 0 else f"model.{k}.safetensors"


def member_files(folder: Path) -> list[Path]:
    """The ensemble members in ``folder``: ``model.safetensors``, then ``model.1.safetensors``, ... as long as
    they are consecutive (the writers remove members beyond the ensemble they wrote)."""
    files = []
    while (folder / member_file(len(files))).is_file():
        files.append(folder / member_file(len(files)))
    return files


def _fold_files(path: Path) -> list[Path]:
    """Fold checkpoints of a CV run folder, by fold number; only finished folds (with ``result.json``) when
    any fold has one (a checkpoint is written just before its fold's result)."""
    files = [p for p in path.glob("fold_*/" + WEIGHTS_FILE) if p.parent.name[5:].isdigit()]
    finished = [p for p in files if (p.parent / "result.json").is_file()]
    return sorted(finished or files, key=lambda p: int(p.parent.name[5:]))


def _check_fold_hashes(files: list[Path]) -> None:
    hashes = set()
    for f in files:
        result = f.parent / "result.json"
        if result.is_file():
            hashes.add(_read_json(result, "fold result").get("config_hash"))
    if len(hashes) > 1:
        warnings.warn(
            f"{files[0].parent.parent}: folds were trained with {len(hashes)} different configs; "
            "they are ensembled anyway",
            stacklevel=3,
        )


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; :class:`StageError` naming the file when it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: {what} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: {what} must be a JSON object, not {type(data).__name__}")
    return data


def resolve_model_path(path: Path | str) -> tuple[str, Path]:
    """("model" | "cv", folder) for a model folder, a CV run folder or an OUTPUT_DIR holding either.

    Raises :class:`StageError` saying what was looked for when ``path`` is none of them.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise StageError(f"{path}: model folder not found")
    if _is_model_folder(path):
        return "model", path
    if _fold_files(path) and (path / CONFIG_FILE).is_file():
        return "cv", path
    if _is_model_folder(path / "model"):
        return "model", path / "model"
    if _fold_files(path / "cv") and (path / "cv" / CONFIG_FILE).is_file():
        return "cv", path / "cv"
    raise StageError(
        f"{path}: not a model folder ({INFO_FILE} + {WEIGHTS_FILE}, from `seqfer train`) nor a CV run folder "
        f"({CONFIG_FILE} + fold_K/{WEIGHTS_FILE}, from `seqfer cv`), nor an output folder holding one"
    )


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(prefix + k)
    return keys


def load_model_bundle(path: Path | str, overrides: list[str] | None = None) -> ModelBundle:
    """Load a model folder or CV run folder (see the module doc) with ``--set`` overrides on its config.

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
        files = [member for f in _fold_files(folder) for member in member_files(f.parent)]
    if kind == "cv":
        _check_fold_hashes(files)
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
    info = _read_json(folder / INFO_FILE, "model info") if kind == "model" else _cv_info(folder)
    sequence = sequence_config_of(cfg)
    changed = _changed_keys(sequence_config_of(trained_cfg).model_dump(mode="json"), sequence.model_dump(mode="json"))
    changed = [k for k in changed if k not in ("min_face_ratio", "min_frames")]
    if changed:
        warnings.warn(f"prediction preprocessing differs from training in: {', '.join(changed)}", stacklevel=2)
    return ModelBundle(
        models=models,
        classes=list(classes),
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
    return {"cv_summary": _read_json(summary, "CV summary")} if summary.is_file() else {}


# ------------------------------------------------------------------------------------------------ writing


def cv_accuracy(cv_folder: Path, cfg: Config) -> dict | None:
    """CV figures from ``cv_folder/summary.json`` when it exists: accuracy mean/std, mean class accuracy,
    folds, and whether that run used the same data, preprocessing, model and training settings as ``cfg``."""
    summary_path = Path(cv_folder) / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    same = None
    if (Path(cv_folder) / CONFIG_FILE).is_file():
        try:
            cv_cfg = load_config(Path(cv_folder) / CONFIG_FILE)
            same = _comparable(cv_cfg) == _comparable(cfg)
        except Exception:  # an older or edited config: unknown, not fatal
            same = None
    return {
        "accuracy_mean": summary.get("accuracy_mean"),
        "accuracy_std": summary.get("accuracy_std"),
        "mean_class_accuracy": summary.get("mean_class_accuracy"),
        "n_folds": len(summary.get("folds", [])),
        "n_sequences": summary.get("n_sequences"),
        "same_settings": same,
        "source": str(summary_path),
    }


def _comparable(cfg: Config) -> dict:
    return {
        "seed": cfg.seed,
        "data": cfg.data.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "sequence": sequence_config_of(cfg).model_dump(mode="json"),
    }


def write_model_folder(
    folder: Path,
    models: TwoStream | Sequence[TwoStream],
    cfg: Config,
    classes: list[str],
    info: dict,
    history: list[dict] | None = None,
) -> Path:
    """Write a complete model folder at ``folder`` (replacing a model folder seqfer wrote there) and return it.

    ``models``: one network, or the members of an ensemble in member order (:func:`member_file` names them).

    Anything else at ``folder`` is refused (:class:`StageError`, see :mod:`pipeline.runtime.output_folder`). Written to
    a uniquely named sibling temporary folder first and renamed, so a crash never leaves half a model folder.
    ``info``: training facts for model.json and the card (data, split, best_epoch, val_accuracy, cv, and
    ``members``: one dict per member with its seed, best_epoch, val_accuracy...).
    """
    models = [models] if isinstance(models, TwoStream) else list(models)
    if not models:
        raise StageError(f"{folder}: a model folder needs at least one network")
    folder = Path(folder)
    check_model_folder_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder gets the usual permissions
        _write_model_files(tmp, models, cfg, classes, info, history)
        write_marker(tmp, MODEL_KIND)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            folder.replace(old / "replaced")
            tmp.replace(folder)
            shutil.rmtree(old)
        else:
            tmp.replace(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def check_model_folder_target(folder: Path) -> None:
    """Raise :class:`StageError` unless ``folder`` is absent, empty or a model folder seqfer wrote (marker, or a
    marker-less folder holding only model-folder files with a seqfer ``model.json``)."""
    check_replaceable(folder, MODEL_KIND, legacy=(INFO_FILE, WEIGHTS_FILE), allowed=MODEL_FILES)
    if folder.is_dir() and marker_kind(folder) is None and any(folder.iterdir()):
        try:
            legacy_ok = json.loads((folder / INFO_FILE).read_text()).get("format") == MODEL_FORMAT
        except (OSError, ValueError, AttributeError):
            legacy_ok = False
        if not legacy_ok:
            check_replaceable(folder, MODEL_KIND)  # raises: not ours


def _write_model_files(
    tmp: Path, models: list[TwoStream], cfg: Config, classes: list[str], info: dict, history: list[dict] | None
) -> None:
    import pandas as pd

    from pipeline.config import to_yaml
    from stages.learning.training.fit import save_checkpoint

    members = info.get("members") or [{"best_epoch": info.get("best_epoch")}] + [{}] * (len(models) - 1)
    for k, model in enumerate(models):
        extra = {"member": k, "best_epoch": members[k].get("best_epoch"), "trained_at": info.get("trained_at")}
        save_checkpoint(tmp / member_file(k), model, cfg.model, classes, extra)
    full_info = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "classes": list(classes),
        "preprocessing": {
            "sequence": sequence_config_of(cfg).model_dump(mode="json"),
            "model_input": cfg.model.input.model_dump(mode="json"),
        },
        "model": cfg.model.model_dump(mode="json"),
        "versions": versions(),
        "ensemble": len(models),
        **info,
    }
    (tmp / INFO_FILE).write_text(json.dumps(full_info, indent=2, default=str))
    (tmp / CONFIG_FILE).write_text(to_yaml(cfg))
    (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
    if history:
        pd.DataFrame(history).to_csv(tmp / "history.csv", index=False)
    (tmp / "README.md").write_text(model_card(full_info, cfg))


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}%"


def _ensemble_lines(info: dict) -> list[str]:
    """The card's line on an ensemble (none for a single network)."""
    members = info.get("members") or []
    if info.get("ensemble", 1) <= 1 or not members:
        return []
    return [
        f"- Ensemble of {len(members)} networks (`train.ensemble`), class probabilities averaged; member k is the "
        "run at seed + k, each with its own validation subjects: seeds "
        f"{', '.join(str(m.get('seed', '?')) for m in members)}; best epochs "
        f"{', '.join(str(m.get('best_epoch', '?')) for m in members)}; validation accuracies "
        f"{', '.join(_pct(m.get('val_accuracy')) for m in members)} (the line above is member 0's)"
    ]


def model_card(info: dict, cfg: Config) -> str:
    """The model folder's README.md: what it is, what it was trained on, how well it did, how to use it."""
    data, split, cv = info.get("data", {}), info.get("split", {}), info.get("cv")
    seq, inp = info["preprocessing"]["sequence"], info["preprocessing"]["model_input"]
    lines = [
        "# seqfer model card",
        "",
        f"- Trained: {info.get('trained_at', 'unknown')}",
        f"- Model: {cfg.model.streams}"
        + (
            f" ({cfg.model.appearance.name} + {cfg.model.geometry.name}, fusion {cfg.model.fusion})"
            if cfg.model.streams == "fused"
            else ""
        ),
        f"- Classes ({len(info['classes'])}, output order): {', '.join(info['classes'])}",
        "",
        "## Data",
        "",
        f"- Dataset: {data.get('format', '?')} at `{data.get('root', '?')}` (manifest `{data.get('manifest', '?')}`)",
        f"- Labelled sequences used: {data.get('n_sequences', '?')} from {data.get('n_subjects', '?')} subjects; "
        f"excluded (failed preprocessing): {data.get('n_excluded', 0)}",
        f"- Sequences per class: {', '.join(f'{k} {v}' for k, v in data.get('class_counts', {}).items())}",
        f"- Model selection: {split.get('n_train', '?')} training sequences ({split.get('n_train_subjects', '?')} "
        f"subjects); best epoch {info.get('best_epoch', '?')} chosen on {split.get('n_val', '?')} validation "
        f"sequences of {split.get('n_val_subjects', '?')} held-out subject(s) (val_fraction "
        f"{split.get('val_fraction', '?')}, seed {split.get('seed', '?')}); validation accuracy "
        f"{_pct(info.get('val_accuracy'))}",
        *_ensemble_lines(info),
        "",
        "## Accuracy",
        "",
    ]
    if cv:
        note = {
            True: "same settings as this model",
            False: "NOTE: that run used different settings",
            None: "settings not compared",
        }[cv.get("same_settings")]
        lines.append(
            f"- {cv['n_folds']}-fold subject-independent CV: {_pct(cv['accuracy_mean'])} +- "
            f"{_pct(cv['accuracy_std'])} (mean class accuracy {_pct(cv['mean_class_accuracy'])}; {note}; "
            f"`{cv['source']}`)"
        )
    else:
        lines.append("- CV accuracy unknown: no `seqfer cv` summary was found for this output folder.")
    lines += [
        "- The validation accuracy above is on few subjects and chose the epoch: it is optimistic; quote the CV "
        "figure.",
        "",
        "## Preprocessing it expects (applied automatically by `seqfer predict`)",
        "",
        f"- Frames: {seq['frames']['mode']} (frame folders assumed at {seq['frames']['fps']} fps); landmarks: "
        f"{seq['landmarks']['backend']} ({seq['landmarks']['detector']} detector, tracking "
        f"{'on' if seq['landmarks']['track'] else 'off'}); aligned crops {seq['align']['size']} px "
        f"{seq['align']['color']}; trajectory {seq['trajectory']['length']} steps, {seq['trajectory']['normalise']}",
        f"- Model input: appearance {inp['appearance']} (k={inp['k']}) at {inp['size']} px; geometry = the "
        "trajectory. Sequences should run from a neutral face to the expression's peak, like the training data; "
        "a single image gives an all-zero trajectory (the geometry stream sees no motion).",
        "",
        "## Use",
        "",
        "```bash",
        "seqfer predict MODEL_FOLDER clip.mp4 frames_dir/ face.jpg -o predictions.csv",
        "```",
        "",
        "```python",
        "from pipeline.predict.predictor import Predictor",
        "p = Predictor.load('MODEL_FOLDER')",
        "result = p.predict('clip.mp4')  # .label, .probabilities, .status, .reason",
        "```",
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in info.get("versions", {}).items()],
        "",
    ]
    return "\n".join(lines)
