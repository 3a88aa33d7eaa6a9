"""Labelled data: the model inputs of every labelled, preprocessed sequence, their folds, the split of one fold,
and the prepared-data file that carries them to another machine.

- :func:`load_labelled_data`: manifest -> (preprocess, resumable) -> :class:`LabelledData` (model inputs with the
  configured networks' appearance extras and training targets, in manifest order; sequences without model input
  are listed in ``excluded`` with the reason, never silently dropped). ``seqfer cv``, ``train``, ``compare`` and
  ``run`` all start here.
- :func:`split_fold`: (train, validation, test) rows of one fold; validation = whole TRAINING subjects.
- :func:`save_labelled_data` / :func:`load_labelled_npz`: one ``.npz`` (``seqfer compare --prepare-only`` /
  ``--data``), keyed by :func:`data_key` so a file prepared with other settings is refused.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.folds import require_classes
from pipeline.config import Config
from pipeline.data.manifest import prepare_manifest
from pipeline.errors import ConfigError
from pipeline.preprocess.run import preprocess_dir, run_preprocess
from pipeline.preprocess.to_stages import sequence_config, source_from_row
from stages.atomic_io import atomic_open
from stages.errors import StageError
from stages.learning.inputs.extras import ModelNeeds, build_targets, model_inputs, needs_of
from stages.learning.training.dataset import ArrayDataset
from stages.preprocess.cache import stable_hash
from stages.preprocess.sequence import SequenceProcessor
from stages.record import SequenceStatus

log = logging.getLogger(__name__)


@dataclass
class LabelledData:
    """Model inputs of every labelled, successfully preprocessed sequence, in manifest order."""

    sequence_ids: np.ndarray
    subjects: np.ndarray
    folds: np.ndarray
    labels: np.ndarray  # class indices into `classes`
    appearance: np.ndarray  # [N, C, S, S] float32
    trajectory: np.ndarray  # [N, L, 68, 2] float32
    classes: list[str]
    excluded: pd.DataFrame  # labelled sequences without model input, with the reason
    landmarks: np.ndarray | None = None  # [N, 68, 2] peak-frame aligned landmarks, model-input pixels
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # training-only per-sequence arrays

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        targets = {k: v[idx] for k, v in self.targets.items()}
        return ArrayDataset(self.appearance[idx], self.trajectory[idx], self.labels[idx], targets)


def load_labelled_data(cfg: Config, preprocess: bool = True, needs: ModelNeeds | None = None) -> LabelledData:
    """Manifest -> (preprocess, skipping cached work) -> model inputs of the labelled sequences.

    ``needs``: appearance extras appended and training targets computed (stages.learning.inputs.extras); default: what
    ``cfg.model`` declares.
    """
    needs = needs_of(cfg.model) if needs is None else needs
    df, meta = prepare_manifest(cfg)
    if preprocess:
        run_preprocess(cfg, manifest=df)
    index = pd.read_parquet(preprocess_dir(cfg) / "index.parquet").set_index("sequence_id")
    processor = SequenceProcessor(sequence_config(cfg), cfg.cache_dir)
    classes = list(meta.classes)
    keep, records, excluded = [], [], []
    recomputed = 0
    for _, row in df[df["labelled"]].iterrows():
        status = index["status"].get(row["sequence_id"], SequenceStatus.NOT_PREPROCESSED)
        reason = index["reason"].get(row["sequence_id"], "")
        record = processor.load(source_from_row(row)) if status == SequenceStatus.OK else None
        if record is None and status == SequenceStatus.OK:  # damaged or removed since preprocessing: recompute it now
            outcome = processor.process(source_from_row(row))
            record, status, reason = outcome.record, outcome.status, outcome.reason
            recomputed += 1
        if record is None:
            excluded.append(
                {
                    "sequence_id": row["sequence_id"],
                    "subject": row["subject"],
                    "fold": row["fold"],
                    "label": row["label"],
                    "status": status,
                    "reason": reason,
                }
            )
            continue
        keep.append(row)
        records.append(record)
    kept = pd.DataFrame(keep)
    if recomputed:
        log.info("data: %d sequence(s) had a damaged or missing cache entry and were recomputed", recomputed)
    if excluded:
        n_labelled = len(keep) + len(excluded)
        reasons = Counter(f"{e['status']}: {e['reason']}" if e["reason"] else e["status"] for e in excluded)
        log.warning(
            "using %d of %d labelled sequences; %d excluded (%s)",
            len(keep),
            n_labelled,
            len(excluded),
            "; ".join(f"{n}x {r}" for r, n in reasons.most_common(5)),
        )
    _require_usable_classes([str(c) for c in kept.get("label", [])], len(excluded))
    appearance, trajectory, landmarks = model_inputs(records, cfg.model.input, needs.extras)
    return LabelledData(
        sequence_ids=kept["sequence_id"].to_numpy(str),
        subjects=kept["subject"].to_numpy(str),
        folds=kept["fold"].to_numpy(np.int64),
        labels=np.array([classes.index(c) for c in kept["label"]], dtype=np.int64),
        appearance=appearance,
        trajectory=trajectory,
        classes=classes,
        excluded=pd.DataFrame(excluded, columns=["sequence_id", "subject", "fold", "label", "status", "reason"]),
        landmarks=landmarks,
        targets=build_targets(records, needs.targets, cfg.cache_dir),
    )


def _require_usable_classes(labels: list[str], n_excluded: int) -> None:
    """At least 2 classes must survive preprocessing (:func:`data_manifests.folds.require_classes`); else one
    ``error:`` line saying how many sequences preprocessing excluded."""
    try:
        require_classes(pd.DataFrame({"label": labels, "labelled": True}))
    except ManifestError as exc:
        raise StageError(f"after preprocessing ({n_excluded} labelled sequence(s) excluded): {exc}") from None


def split_fold(
    subjects: np.ndarray, folds: np.ndarray, fold: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row indices for one fold. Test = the fold's rows; validation = a seeded draw of
    whole TRAINING subjects; no subject is in two parts."""
    test = np.flatnonzero(folds == fold)
    train_subjects = np.array(sorted(set(subjects[folds != fold])))
    rng = np.random.default_rng([seed, fold])
    # At least one validation subject, but never all of them (a single training subject: no validation, and
    # fit() keeps the last epoch).
    n_val = min(max(1, int(round(val_fraction * len(train_subjects)))), len(train_subjects) - 1)
    val_subjects = set(rng.choice(train_subjects, size=n_val, replace=False).tolist())
    is_train_row = folds != fold
    is_val_row = np.array([s in val_subjects for s in subjects])
    return np.flatnonzero(is_train_row & ~is_val_row), np.flatnonzero(is_train_row & is_val_row), test


# --- prepared-data file (npz) -----------------------------------------------------------------------------------------


def data_key(cfg: Config) -> str:
    """What prepared data depends on: dataset, folds, preprocessing and model-input settings. (Which training
    targets it holds is checked separately, so data prepared for more networks serves fewer.)"""
    return stable_hash("compare-data", cfg.data, cfg.fold_seed, sequence_config(cfg), cfg.model.input)


def save_labelled_data(path: Path, data: LabelledData, key: str) -> Path:
    """Write ``data`` to one ``.npz`` (appearance as exact uint8 when it holds multiples of 1/255)."""
    app = data.appearance
    app8 = np.rint(app * 255.0)
    exact = bool(np.array_equal(app8 / np.float32(255.0), app.astype(np.float32)))
    arrays = {
        "sequence_ids": data.sequence_ids.astype(str),
        "subjects": data.subjects.astype(str),
        "folds": data.folds,
        "labels": data.labels,
        "appearance": app8.astype(np.uint8) if exact else app.astype(np.float32),
        "trajectory": data.trajectory,
        "landmarks": data.landmarks if data.landmarks is not None else np.zeros((0, 68, 2), np.float32),
        "meta": np.array(
            json.dumps(
                {
                    "key": key,
                    "classes": data.classes,
                    "appearance_uint8": exact,
                    "excluded": data.excluded.to_csv(index=False),
                    "targets": sorted(data.targets),
                }
            )
        ),
    }
    arrays.update({f"target__{k}": v for k, v in data.targets.items()})
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_labelled_npz(path: Path, key: str | None = None) -> LabelledData:
    """Read :func:`save_labelled_data`'s file; :class:`ConfigError` when ``key`` is given and differs (the
    file was prepared with another dataset, preprocessing, input or model list)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prepared data {path} does not exist (write it with `seqfer compare ... --prepare-only`)")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if key is not None and meta["key"] != key:
            raise ConfigError(
                f"prepared data {path} was made for another config (dataset, folds, preprocessing or "
                "model.input differ); prepare it again with --prepare-only"
            )
        app = z["appearance"]
        landmarks = z["landmarks"]
        return LabelledData(
            sequence_ids=z["sequence_ids"],
            subjects=z["subjects"],
            folds=z["folds"],
            labels=z["labels"],
            appearance=app.astype(np.float32) / np.float32(255.0) if meta["appearance_uint8"] else app,
            trajectory=z["trajectory"],
            classes=list(meta["classes"]),
            excluded=pd.read_csv(StringIO(meta["excluded"])) if meta["excluded"].strip() else pd.DataFrame(),
            landmarks=landmarks if len(landmarks) else None,
            targets={k: z[f"target__{k}"] for k in meta["targets"]},
        )
