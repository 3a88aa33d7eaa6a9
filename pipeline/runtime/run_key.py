"""The one run key of resumable results: cv folds, compare cells and predict's resume rows.

A stored result is reused only when its key equals the key of the run asking for it, and the key covers
everything the result depends on: the settings (the caller's ``parts``: config hash, folds, model fingerprint,
options...) and, for training results, the identity of the data (:func:`data_identity`). So editing a label,
removing a sequence, moving a subject to another fold (or a sequence to another split) or recomputing an input
after its source changed re-runs what it affects instead of reporting old models against new labels.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from stages.preprocess.cache import stable_hash

if TYPE_CHECKING:
    from pipeline.data.labelled import LabelledData

RUN_KEY_VERSION = 2
"""Bump when what a stored result means changes (version 2: results are stored by sequence_id)."""


def data_identity(data: LabelledData) -> str:
    """sha256 (hex) of a dataset as training sees it: its classes, and per sequence (in order) its id, subject,
    fold, label name, model input bytes (appearance, trajectory, landmarks, training targets) and, for a dataset
    with its own split, its split (so a sequence moved from ``val`` to ``train`` never reuses a result).

    The model inputs are what the cache entries of the sequences hold, so this covers the manifest's sequences,
    labels and folds and the cache keys of the inputs (a changed source or preprocessing setting changes them).
    """
    digest = hashlib.sha256()

    def add(name: str, array: np.ndarray | None) -> None:
        if array is None:
            digest.update(f"{name}:none\0".encode())
            return
        a = np.ascontiguousarray(array)
        digest.update(f"{name}:{a.dtype.str}:{a.shape}\0".encode())
        if a.dtype.kind in "OU":
            digest.update("\0".join(map(str, a.ravel().tolist())).encode("utf-8"))
        else:
            digest.update(a.tobytes())

    digest.update(stable_hash(list(data.classes)).encode())
    add("sequence_ids", np.asarray(data.sequence_ids).astype(str))
    add("subjects", np.asarray(data.subjects).astype(str))
    add("folds", np.asarray(data.folds, dtype=np.int64))
    add("labels", np.array([data.classes[int(i)] for i in data.labels], dtype=str))
    add("appearance", data.appearance)
    add("trajectory", data.trajectory)
    add("landmarks", data.landmarks)
    for name in sorted(data.targets):
        add(f"target:{name}", data.targets[name])
    if data.splits is not None:  # a dataset with its own split (absent for CV folds: their keys stay as they were)
        add("splits", np.asarray(data.splits).astype(str))
    return digest.hexdigest()


def run_key(kind: str, *parts: object) -> str:
    """The key of one stored result of ``kind`` ("cv-fold", "compare-cell", "predict") from everything it
    depends on (JSON-able ``parts``; see :func:`stages.preprocess.cache.stable_hash`)."""
    return stable_hash("seqfer-run", RUN_KEY_VERSION, kind, *parts)
