"""Write a model folder whole (a temp folder swapped in) with its weights, model.json, config, history and card.

The layout is :mod:`pipeline.model_folder.format`'s; :mod:`pipeline.model_folder.load` reads it back.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.config import Config, load_config
from pipeline.model_folder.card import model_card
from pipeline.model_folder.fingerprint import comparable_settings
from pipeline.model_folder.format import (
    CONFIG_FILE,
    INFO_FILE,
    MODEL_FILES,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    MODEL_KIND,
    WEIGHTS_FILE,
    member_file,
)
from pipeline.preprocess.to_stages import sequence_config
from pipeline.runtime.output_folder import check_replaceable, marker_kind, write_marker
from stages.atomic_io import atomic_path, atomic_write_text
from stages.errors import StageError
from stages.learning.models import TwoStream


def versions() -> dict[str, str]:
    """Versions recorded in model folders and CV run folders: seqfer, python, torch, numpy, platform, and the CPU
    (its model name, its core count, and whether it computes bfloat16 natively: training speed and the precision of
    ``train.precision: auto`` depend on it)."""
    import torch

    from stages.learning.training.precision import bfloat16_is_native

    try:
        from importlib.metadata import version

        seqfer = version("seqfer")
    except Exception:  # not pip-installed: a plain checkout
        seqfer = "0.1.0 (checkout)"
    bf16 = "native" if bfloat16_is_native("cpu") else "emulated"
    return {
        "seqfer": seqfer,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores, bfloat16 {bf16}",
    }


def cpu_model() -> str:
    """The CPU's model name as the system reports it (Linux: /proc/cpuinfo), else ``platform.processor()`` or
    ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
            same = comparable_settings(cv_cfg) == comparable_settings(cfg)
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
    from stages.learning.training.checkpoint import save_checkpoint

    members = info.get("members") or [{"best_epoch": info.get("best_epoch")}] + [{}] * (len(models) - 1)
    for k, model in enumerate(models):
        extra = {"member": k, "best_epoch": members[k].get("best_epoch"), "trained_at": info.get("trained_at")}
        save_checkpoint(tmp / member_file(k), model, cfg.model, classes, extra)
    full_info = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "classes": list(classes),
        "preprocessing": {
            "sequence": sequence_config(cfg).model_dump(mode="json"),
            "model_input": cfg.model.input.model_dump(mode="json"),
        },
        "model": cfg.model.model_dump(mode="json"),
        "versions": versions(),
        "ensemble": len(models),
        **info,
    }
    atomic_write_text(tmp / INFO_FILE, json.dumps(full_info, indent=2, default=str))
    atomic_write_text(tmp / CONFIG_FILE, to_yaml(cfg))
    atomic_write_text(tmp / "classes.txt", "".join(c + "\n" for c in classes))
    if history:
        with atomic_path(tmp / "history.csv") as path:
            pd.DataFrame(history).to_csv(path, index=False)
    atomic_write_text(tmp / "README.md", model_card(full_info, cfg))
