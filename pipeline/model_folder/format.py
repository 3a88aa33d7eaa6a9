"""The model folder's layout: its file names, ensemble member files, and which folder a MODEL argument names.

A model folder holds everything prediction needs and a person wants to know::

    model.safetensors   weights + model config + classes (training.checkpoint.save_checkpoint; never pickle)
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

import json
from pathlib import Path

from stages.errors import StageError

MODEL_FORMAT = "seqfer-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
CONFIG_FILE = "config.yaml"
MODEL_KIND = "model"
MODEL_FILES = (WEIGHTS_FILE, INFO_FILE, CONFIG_FILE, "classes.txt", "history.csv", "README.md")


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` holds a model folder's facts and (first) weights."""
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


def fold_files(path: Path) -> list[Path]:
    """Fold checkpoints of a CV run folder, by fold number; only finished folds (with ``result.json``) when
    any fold has one (a checkpoint is written just before its fold's result)."""
    files = [p for p in path.glob("fold_*/" + WEIGHTS_FILE) if p.parent.name[5:].isdigit()]
    finished = [p for p in files if (p.parent / "result.json").is_file()]
    return sorted(finished or files, key=lambda p: int(p.parent.name[5:]))


def read_json(path: Path, what: str) -> dict:
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
    if is_model_folder(path):
        return "model", path
    if fold_files(path) and (path / CONFIG_FILE).is_file():
        return "cv", path
    if is_model_folder(path / "model"):
        return "model", path / "model"
    if fold_files(path / "cv") and (path / "cv" / CONFIG_FILE).is_file():
        return "cv", path / "cv"
    raise StageError(
        f"{path}: not a model folder ({INFO_FILE} + {WEIGHTS_FILE}, from `seqfer train`) nor a CV run folder "
        f"({CONFIG_FILE} + fold_K/{WEIGHTS_FILE}, from `seqfer cv`), nor an output folder holding one"
    )
