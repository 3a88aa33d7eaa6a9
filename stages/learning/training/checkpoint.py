"""Checkpoints: one ``.safetensors`` file of weights, model config and classes (never pickle), with safety checks."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.jsonable import json_default
from stages.learning.models import ModelConfig, TwoStream, build_model
from stages.learning.training.divergence import TrainingDiverged, nonfinite_note

CHECKPOINT_FORMAT = "seqfer-checkpoint"
CHECKPOINT_VERSION = "1"


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


_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save zip archive; raw pickle protocol >= 2


def load_checkpoint(path: str | Path) -> tuple[TwoStream, ModelConfig, list[str], dict]:
    """Read a :func:`save_checkpoint` file -> (model in eval mode on CPU, config, classes, extra).

    Refuses pickled files (``torch.save`` output) without unpickling them, and weights holding NaN or infinity (a
    diverged training); :class:`StageError` names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(8)
    try:  # reading a safetensors header never unpickles anything, so try it first: a valid header's length
        # (the first 8 bytes) can start with the pickle magic byte 0x80
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for malformed files
        if head.startswith(_PICKLE_MAGICS):
            msg = f"checkpoint {path} is a pickled file; seqfer only loads .safetensors checkpoints"
            raise StageError(msg) from None
        raise StageError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise StageError(f"checkpoint {path} was not written by seqfer (no '{CHECKPOINT_FORMAT}' metadata)")
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise StageError(
            f"checkpoint {path} has format version {metadata.get('version')}; "
            f"this seqfer reads version {CHECKPOINT_VERSION}"
        )
    cfg, classes, build, extra = _checkpoint_metadata(path, metadata)
    try:
        model = build_model(cfg, build["n_classes"], build["in_channels"], build.get("n_steps"))
    except (ValueError, TypeError, RuntimeError) as exc:  # StageError is a ValueError
        raise StageError(f"checkpoint {path}: its model config cannot be built: {exc}") from None
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise StageError(f"checkpoint {path} does not match its model config: {exc}") from None
    note = nonfinite_note(model.state_dict())
    if note:  # written before seqfer refused diverged weights: such a network predicts nothing
        raise StageError(
            f"checkpoint {path}: its weights are not finite ({note}); the training that wrote it diverged: "
            "train again with a lower train.lr"
        )
    model.eval()
    return model, cfg, classes, extra


_MAX_CLASSES, _MAX_CHANNELS, _MAX_STEPS = 10_000, 64, 100_000  # far beyond any real model: a guard, not a limit


def _checkpoint_metadata(path: Path, metadata: dict) -> tuple[ModelConfig, list[str], dict, dict]:
    """(model config, classes, build shapes, extra) from a checkpoint's metadata; :class:`StageError` naming the
    file for a missing key, bad JSON, absurd sizes or class names that do not match the outputs."""
    from pydantic import ValidationError

    missing = [k for k in ("model_config", "classes", "build") if k not in metadata]
    if missing:
        raise StageError(f"checkpoint {path}: metadata lacks {', '.join(missing)}")
    try:
        cfg = ModelConfig.model_validate_json(metadata["model_config"])
        classes = json.loads(metadata["classes"])
        build = json.loads(metadata["build"])
        extra = json.loads(metadata.get("extra") or "{}")
    except (ValueError, ValidationError) as exc:
        raise StageError(f"checkpoint {path}: metadata is not valid ({str(exc).splitlines()[0][:200]})") from None

    def count(name: str, high: int, optional: bool = False) -> bool:
        value = build.get(name) if isinstance(build, dict) else None
        if value is None and optional:
            return True
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high

    if not (
        isinstance(build, dict)
        and count("n_classes", _MAX_CLASSES)
        and count("in_channels", _MAX_CHANNELS)
        and count("n_steps", _MAX_STEPS, optional=True)
    ):
        raise StageError(f"checkpoint {path}: metadata 'build' has missing or absurd sizes: {str(build)[:200]}")
    if not (
        isinstance(classes, list)
        and all(isinstance(c, str) and c for c in classes)
        and len(set(classes)) == len(classes)
    ):
        raise StageError(f"checkpoint {path}: metadata 'classes' must be a list of distinct names")
    if len(classes) != build["n_classes"]:
        raise StageError(f"checkpoint {path}: {len(classes)} class names for a model with {build['n_classes']} outputs")
    if not isinstance(extra, dict):
        raise StageError(f"checkpoint {path}: metadata 'extra' must be a JSON object")
    return cfg, classes, build, extra
