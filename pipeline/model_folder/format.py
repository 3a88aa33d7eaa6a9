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
import logging
from pathlib import Path

from pipeline.model_folder.ready import DEFAULT_MODEL, list_ready_models, ready_model_dir
from stages.errors import StageError

log = logging.getLogger(__name__)

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
    """("model" | "cv", folder) for a model folder, a CV run folder, an OUTPUT_DIR holding either, or the name of
    a ready model (``fer2013``; :mod:`pipeline.model_folder.ready`) where no such folder is.

    Raises :class:`StageError` saying what was looked for when ``path`` is none of them.
    """
    found = _model_in(Path(path).absolute())
    if found is not None:
        return found
    ready = ready_model_dir(str(path))
    if ready is not None:
        if not is_model_folder(ready):
            raise StageError(f"ready model {str(path)!r}: its folder {ready} is missing from this installation")
        return "model", ready
    path = Path(path).absolute()
    if not path.exists():
        raise StageError(f"{path}: model folder not found (ready models, by name: {', '.join(list_ready_models())})")
    raise StageError(
        f"{path}: not a model folder ({INFO_FILE} + {WEIGHTS_FILE}, from `seqfer train`) nor a CV run folder "
        f"({CONFIG_FILE} + fold_K/{WEIGHTS_FILE}, from `seqfer cv`), nor an output folder holding one"
    )


def names_model(arg: str) -> bool:
    """Whether a command-line argument names a model that :func:`resolve_model_path` finds: a folder holding
    one, or a ready model's name where no such folder is."""
    return _model_in(Path(arg).absolute()) is not None or ready_model_dir(arg) is not None


def _model_in(path: Path) -> tuple[str, Path] | None:
    """("model" | "cv", folder) when ``path`` is a model folder or CV run folder, or holds one as ``model/`` /
    ``cv/`` (looked for in that order); None otherwise."""
    for kind, folder in (("model", path), ("cv", path), ("model", path / "model"), ("cv", path / "cv")):
        if (
            is_model_folder(folder)
            if kind == "model"
            else bool(fold_files(folder)) and (folder / CONFIG_FILE).is_file()
        ):
            return kind, folder
    return None


def _is_cv_folder(path: Path) -> bool:
    """Whether ``path`` holds a CV run: fold checkpoints and the run's config."""
    return bool(fold_files(path)) and (path / CONFIG_FILE).is_file()


def split_model_argument(args: list[str]) -> tuple[str, list[str]]:
    """`seqfer predict [MODEL] INPUTS...` -> (model, inputs). The first of several arguments is the model when it
    names one (:func:`names_model`), or when it looks like a mistyped one: a path that does not exist, without a
    file suffix or glob characters (so the user gets "model folder not found", not predictions by another model).
    Otherwise every argument is an input and the model is the ready
    :data:`~pipeline.model_folder.ready.DEFAULT_MODEL` (said on the log). :class:`StageError` when a model is
    named but no input."""
    if not args:
        raise StageError(f"no inputs to predict: give videos, images or folders (a model first if not {DEFAULT_MODEL})")
    first = args[0]
    if names_model(first):
        if len(args) == 1:
            raise StageError(f"no inputs to predict: {first} is a model; give videos, images or folders after it")
        return first, list(args[1:])
    if len(args) > 1 and _looks_like_a_folder_name(first):
        return first, list(args[1:])
    log.info(f"model: {DEFAULT_MODEL} (the ready model; name a model first to use another)")
    return DEFAULT_MODEL, list(args)


def _looks_like_a_folder_name(arg: str) -> bool:
    """A path that does not exist, with no file suffix and no glob characters: a mistyped model, not an input."""
    path = Path(arg)
    return not path.exists() and not path.suffix and not any(c in arg for c in "*?[")
