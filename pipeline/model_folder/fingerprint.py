"""What identifies a model and its settings: weights-and-preprocessing fingerprint, settings compared across runs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import Config
from pipeline.preprocess.to_stages import sequence_config
from stages.learning.models import ModelInputConfig
from stages.preprocess.sequence import SequenceConfig


def model_fingerprint(weight_files: Iterable[Path], sequence: SequenceConfig, model_input: ModelInputConfig) -> str:
    """sha256 (first 16 hex digits) of the weight files' bytes, in order, and the preprocessing settings."""
    digest = hashlib.sha256()
    for path in weight_files:
        digest.update(path.read_bytes())
    digest.update(sequence.model_dump_json().encode())
    digest.update(model_input.model_dump_json().encode())
    return digest.hexdigest()[:16]


def changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (a key missing on one side counts), sorted."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(prefix + k)
    return keys


def comparable_settings(cfg: Config) -> dict:
    """What makes two runs' figures comparable: seed, data, model, training and preprocessing settings."""
    return {
        "seed": cfg.seed,
        "data": cfg.data.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "sequence": sequence_config(cfg).model_dump(mode="json"),
    }
