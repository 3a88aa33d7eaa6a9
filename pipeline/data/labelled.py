"""Labelled data: the model inputs of every labelled, preprocessed sequence, their folds (or the dataset's own
split), the split of one fold, and the prepared-data file that carries them to another machine.

- :func:`load_labelled_data`: manifest -> (preprocess, resumable) -> :class:`LabelledData` (model inputs with the
  configured networks' appearance extras and training targets, in manifest order; sequences without model input
  are listed in ``excluded`` with the reason, never silently dropped). ``seqfer cv``, ``train``, ``compare`` and
  ``run`` all start here.
- :func:`split_fold`: (train, validation, test) rows of one fold; validation = whole TRAINING subjects.
- :func:`refuse_own_split`: the one ``error:`` line of a cross-validating verb on a dataset with its own split
  (FER2013: trained on ``train``, epoch chosen on ``val``, ``test`` scored once by ``seqfer evaluate``).
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
from data_manifests.folds import has_own_split, require_classes
from pipeline.config import Config
from pipeline.data.manifest import prepare_manifest
from pipeline.errors import ConfigError
from pipeline.preprocess.run import preprocess_dir, run_preprocess
from pipeline.preprocess.to_stages import sequence_config, sources_from_manifest
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
    """Model inputs of every labelled, successfully preprocessed sequence, in manifest order.

    ``folds``: 0-based CV fold per row, -1 where the manifest has none (a dataset with its own split).
    ``splits``: the dataset's own split per row (``train`` | ``val`` | ``test``; ``""`` for a row without one), or
    None for a dataset without its own split (CV folds)."""

    sequence_ids: np.ndarray
    subjects: np.ndarray
    folds: np.ndarray
    labels: np.ndarray  # class indices into `classes`
    appearance: np.ndarray  # [N, C, S, S] uint8 grey levels where exact (model_inputs), else float32 in [0, 1]
    trajectory: np.ndarray  # [N, L, 68, 2] float32
    classes: list[str]
    excluded: pd.DataFrame  # labelled sequences without model input, with the reason
    landmarks: np.ndarray | None = None  # [N, 68, 2] peak-frame aligned landmarks, model-input pixels
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # training-only per-sequence arrays
    splits: np.ndarray | None = None  # [N] str: the dataset's own split; None: CV folds
    n_frames: np.ndarray | None = None  # [N] int: frames in each record (1 for a single image)

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        targets = {k: v[idx] for k, v in self.targets.items()}
        return ArrayDataset(self.appearance[idx], self.trajectory[idx], self.labels[idx], targets)


def load_labelled_data(
    cfg: Config, preprocess: bool = True, needs: ModelNeeds | None = None, refuse_split: str | None = None
) -> LabelledData:
    """Manifest -> (preprocess, skipping cached work) -> model inputs of the labelled sequences.

    ``needs``: appearance extras appended and training targets computed (stages.learning.inputs.extras); default: what
    ``cfg.model`` declares. ``refuse_split``: the cross-validating verb asking ("cv", "compare"); a manifest with
    the dataset's own split is then refused (:func:`refuse_own_split`) before any preprocessing.
    """
    needs = needs_of(cfg.model) if needs is None else needs
    df, meta = prepare_manifest(cfg)
    own_split = has_own_split(df)
    if own_split and refuse_split is not None:
        raise refuse_own_split(cfg, refuse_split)
    if preprocess:
        run_preprocess(cfg, manifest=df)
    index = pd.read_parquet(preprocess_dir(cfg) / "index.parquet").set_index("sequence_id")
    processor = SequenceProcessor(sequence_config(cfg), cfg.cache_dir)
    classes = list(meta.classes)
    keep, records, excluded = [], [], []
    recomputed = 0
    labelled = df[df["labelled"]]
    statuses, reasons = index["status"].to_dict(), index["reason"].to_dict()
    rows = labelled[["sequence_id", "subject", "fold", "label"]].to_dict("records")
    for position, (source, row) in enumerate(zip(sources_from_manifest(labelled), rows, strict=True)):
        status = statuses.get(row["sequence_id"], SequenceStatus.NOT_PREPROCESSED)
        reason = reasons.get(row["sequence_id"], "")
        record = processor.load(source) if status == SequenceStatus.OK else None
        if record is None and status == SequenceStatus.OK:  # damaged or removed since preprocessing: recompute it now
            outcome = processor.process(source)
            record, status, reason = outcome.record, outcome.status, outcome.reason
            recomputed += 1
        if record is None:
            excluded.append({**row, "status": status, "reason": reason})
            continue
        keep.append(position)
        records.append(record)
    kept = labelled.iloc[keep]
    if recomputed:
        log.info("data: %d sequence(s) had a damaged or missing cache entry and were recomputed", recomputed)
    if excluded:
        n_labelled = len(keep) + len(excluded)
        kinds = Counter(e["status"] for e in excluded)  # one count per kind; one example's full reason
        first = excluded[0]
        log.warning(
            "using %d of %d labelled sequences; %d excluded (%s; first: %s: %s)",
            len(keep),
            n_labelled,
            len(excluded),
            ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()),
            first["sequence_id"],
            first["reason"] or first["status"],
        )
    _require_usable_classes([str(c) for c in kept.get("label", [])], len(excluded))
    appearance, trajectory, landmarks = model_inputs(records, cfg.model.input, needs.extras)
    return LabelledData(
        sequence_ids=kept["sequence_id"].to_numpy(str),
        subjects=kept["subject"].to_numpy(str),
        folds=np.array([-1 if pd.isna(f) else int(f) for f in kept["fold"]], dtype=np.int64),
        labels=np.array([classes.index(c) for c in kept["label"]], dtype=np.int64),
        appearance=appearance,
        trajectory=trajectory,
        classes=classes,
        excluded=pd.DataFrame(excluded, columns=["sequence_id", "subject", "fold", "label", "status", "reason"]),
        landmarks=landmarks,
        targets=build_targets(records, needs.targets, cfg.cache_dir),
        splits=np.array(["" if pd.isna(s) else str(s) for s in kept["split"]], dtype=str) if own_split else None,
        n_frames=np.array([len(r.frame_indices) for r in records], dtype=np.int64),
    )


def _require_usable_classes(labels: list[str], n_excluded: int) -> None:
    """At least 2 classes must survive preprocessing (:func:`data_manifests.folds.require_classes`); else one
    ``error:`` line saying how many sequences preprocessing excluded."""
    try:
        require_classes(pd.DataFrame({"label": labels, "labelled": True}))
    except ManifestError as exc:
        raise StageError(f"after preprocessing ({n_excluded} labelled sequence(s) excluded): {exc}") from None


def refuse_own_split(cfg: Config, verb: str) -> StageError:
    """The error of ``seqfer {verb}`` (a cross-validating verb) on a dataset with its own split: it names the
    protocol that applies instead (`seqfer train`, then `seqfer evaluate ... --split test` once)."""
    model = Path(cfg.output_dir) / "model"
    return StageError(
        f"the dataset {cfg.data.root} has its own split (train / val / test), so `seqfer {verb}` (cross-validation) "
        f"does not apply: train on `train` with the epoch chosen on `val` by `seqfer train CONFIG`, then score "
        f"`test` once with `seqfer evaluate {model} {cfg.data.root} --format {cfg.data.format} --split test`"
    )


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
    """Write ``data`` to one ``.npz`` (appearance as exact uint8 when it holds uint8 or multiples of 1/255; it is read
    back in the dtype it had)."""
    app = data.appearance
    held = "uint8" if app.dtype == np.uint8 else "float32"
    if held == "uint8":
        app8, exact = app, True
    else:
        app8 = np.rint(app * 255.0)
        exact = bool(np.array_equal(app8 / np.float32(255.0), app.astype(np.float32)))
    arrays = {
        "sequence_ids": data.sequence_ids.astype(str),
        "subjects": data.subjects.astype(str),
        "folds": data.folds,
        "labels": data.labels,
        "appearance": app8.astype(np.uint8) if exact else app.astype(np.float32),
        "splits": data.splits.astype(str) if data.splits is not None else np.zeros(0, str),
        "trajectory": data.trajectory,
        "landmarks": data.landmarks if data.landmarks is not None else np.zeros((0, 68, 2), np.float32),
        "meta": np.array(
            json.dumps(
                {
                    "key": key,
                    "classes": data.classes,
                    "appearance_uint8": exact,
                    "appearance_held": held,
                    "excluded": data.excluded.to_csv(index=False),
                    "targets": sorted(data.targets),
                    "own_split": data.splits is not None,
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
            appearance=_appearance_as_held(app, meta),
            trajectory=z["trajectory"],
            classes=list(meta["classes"]),
            excluded=pd.read_csv(StringIO(meta["excluded"])) if meta["excluded"].strip() else pd.DataFrame(),
            landmarks=landmarks if len(landmarks) else None,
            targets={k: z[f"target__{k}"] for k in meta["targets"]},
            splits=z["splits"] if meta.get("own_split") else None,
        )


def _appearance_as_held(stored: np.ndarray, meta: dict) -> np.ndarray:
    """The stored appearance in the dtype :class:`LabelledData` held when it was saved: uint8 grey levels stay
    uint8; float32 stored as uint8 (files written before uint8 was held too) is made float32 / 255 again."""
    if meta["appearance_uint8"] and meta.get("appearance_held", "float32") == "float32":
        return stored.astype(np.float32) / np.float32(255.0)
    return stored
