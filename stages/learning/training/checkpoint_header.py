"""A checkpoint's header, and its weights checked for NaN and infinity, read without torch.

:func:`read_checkpoint_header` parses and checks the metadata that :func:`~stages.learning.training.checkpoint.
save_checkpoint` writes into the ``.safetensors`` header (safetensors' own reader, never pickle), and checks that
every floating-point weight is finite by its bits in the memory-mapped file (~5 ms for 10 MB). A process that needs
a model's classes and settings but not its networks (`seqfer predict`'s driver when Ray workers predict) thus
refuses a broken checkpoint with one error before any work, without importing torch.
:func:`~stages.learning.training.checkpoint.load_checkpoint` reads the same header, then builds the network.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open

from stages.errors import StageError
from stages.learning.models.config import ModelConfig

CHECKPOINT_FORMAT = "seqfer-checkpoint"
CHECKPOINT_VERSION = "1"

_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save zip archive; raw pickle protocol >= 2
_MAX_CLASSES, _MAX_CHANNELS, _MAX_STEPS = 10_000, 64, 100_000  # far beyond any real model: a guard, not a limit
_EXPONENT_BITS = {  # safetensors dtype -> (unsigned view, exponent mask): all exponent bits set is NaN or infinity
    "F64": (np.uint64, 0x7FF0_0000_0000_0000),
    "F32": (np.uint32, 0x7F80_0000),
    "F16": (np.uint16, 0x7C00),
    "BF16": (np.uint16, 0x7F80),
}


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint's header says: ``model_config``; ``classes`` (one name per output, in output order);
    ``build``: the shapes the network is built with (``n_classes``, ``in_channels``, optional ``n_steps``);
    ``extra``: whatever the trainer saved beside (a JSON object)."""

    model_config: ModelConfig
    classes: list[str]
    build: dict
    extra: dict


def nonfinite_phrase(names: list[str]) -> str:
    """How a message names non-finite tensors: "NaN or infinite in head.weight and 3 more" ("" for none)."""
    if not names:
        return ""
    return f"NaN or infinite in {names[0]}" + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def read_checkpoint_header(path: str | Path) -> CheckpointHeader:
    """The checked header of a :func:`~stages.learning.training.checkpoint.save_checkpoint` file.

    :class:`StageError` naming the file when it is missing, pickled (``torch.save`` output; never unpickled),
    not safetensors, not written by seqfer, of another format version, when its metadata is missing, not JSON,
    or absurd (sizes, class names that do not match the outputs), or when a weight is NaN or infinite (written
    before seqfer refused diverged weights: such a network predicts nothing). Whether the weights fit the
    network is :func:`~stages.learning.training.checkpoint.load_checkpoint`'s to check.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(8)
    try:  # reading a safetensors header never unpickles anything, so try it first: a valid header's length
        # (the first 8 bytes) can start with the pickle magic byte 0x80
        with safe_open(str(path), framework="numpy") as fh:
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
    header = _parse_metadata(path, metadata)
    bad = _nonfinite_tensors(path)
    if bad:
        raise StageError(
            f"checkpoint {path}: its weights are not finite ({nonfinite_phrase(bad)}); the training that wrote it "
            "diverged: train again with a lower train.lr"
        )
    return header


def _nonfinite_tensors(path: Path) -> list[str]:
    """Names of the floating-point tensors of a safetensors file (whose header safetensors has already read and
    checked) holding a NaN or an infinity, by their exponent bits; integer tensors are not checked."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        entries = json.loads(fh.read(size))
        if fh.seek(0, 2) == 8 + size:  # no tensor bytes at all (mmap refuses an empty view)
            return []
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        bad = []
        for name, entry in entries.items():
            if name == "__metadata__" or entry.get("dtype") not in _EXPONENT_BITS:
                continue
            view, mask = _EXPONENT_BITS[entry["dtype"]]
            start, end = entry["data_offsets"]
            bits = np.frombuffer(
                data, dtype=view, count=(end - start) // np.dtype(view).itemsize, offset=8 + size + start
            )
            if np.any((bits & view(mask)) == view(mask)):
                bad.append(name)
            del bits  # the mmap closes only when no view of it is left
        return bad
    finally:
        data.close()


def _parse_metadata(path: Path, metadata: dict) -> CheckpointHeader:
    """The header from a checkpoint's metadata; :class:`StageError` naming the file for a missing key, bad JSON,
    absurd sizes or class names that do not match the outputs."""
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
    return CheckpointHeader(cfg, classes, build, extra)
