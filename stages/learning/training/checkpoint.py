"""Checkpoints: one ``.safetensors`` file of weights, model config and classes (never pickle), with safety checks."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.jsonable import json_default
from stages.learning.models import ModelConfig, TwoStream, build_model
from stages.learning.training.checkpoint_header import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint_header
from stages.learning.training.divergence import TrainingDiverged, nonfinite_note


def save_checkpoint(
    path: str | Path, model: TwoStream, model_cfg: ModelConfig, classes: list[str], extra: dict | None = None
) -> Path:
    """Write weights to ``path`` (safetensors) with the model config, class names, build shapes and
    ``extra`` (JSON-serialisable) in its metadata. Written to a temporary file and renamed, so a crash
    leaves no half-written checkpoint. Weights or buffers holding NaN or infinity (a diverged training) are
    refused with a :class:`~stages.learning.training.divergence.TrainingDiverged` (a :class:`StageError`) naming
    the file and nothing is written."""
    path = Path(path)
    if len(classes) != model.build_args.get("n_classes", len(classes)):
        raise StageError(f"{len(classes)} class names for a model with {model.build_args['n_classes']} outputs")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    note = nonfinite_note(tensors)
    if note:
        raise TrainingDiverged(f"checkpoint {path} not written: its weights are not finite ({note}); training diverged")
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": model_cfg.model_dump_json(),
        "classes": json.dumps(list(classes)),
        "build": json.dumps(model.build_args),
        "extra": json.dumps(extra or {}, default=json_default),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_checkpoint(path: str | Path) -> tuple[TwoStream, ModelConfig, list[str], dict]:
    """Read a :func:`save_checkpoint` file -> (model in eval mode on CPU, config, classes, extra).

    Refuses pickled files (``torch.save`` output) without unpickling them, weights holding NaN or infinity (a
    diverged training; both checked by :func:`~stages.learning.training.checkpoint_header.read_checkpoint_header`)
    and weights that do not fit the network; :class:`StageError` names the file.
    """
    path = Path(path)
    header = read_checkpoint_header(path)
    cfg, classes, build, extra = header.model_config, header.classes, header.build, header.extra
    try:
        model = build_model(cfg, build["n_classes"], build["in_channels"], build.get("n_steps"))
    except (ValueError, TypeError, RuntimeError) as exc:  # StageError is a ValueError
        raise StageError(f"checkpoint {path}: its model config cannot be built: {exc}") from None
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        why = " ".join(str(exc).split())  # torch's message spans lines
        raise StageError(f"checkpoint {path} does not match its model config: {why}") from None
    model.eval()
    return model, cfg, classes, extra
