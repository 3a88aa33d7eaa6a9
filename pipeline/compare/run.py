"""`seqfer compare`: the same subject-independent folds for several appearance networks x stream settings, one
table (Markdown + CSV) and one picture.

Every cell (network, streams) is an ordinary CV run (:func:`pipeline.cv.run.run_cv`) in its own folder
``OUTPUT_DIR/compare/<network>_<streams>/cv/`` with the config's ``model.appearance.name`` and
``model.streams`` overridden; so its folds resume like any CV run, and a finished cell (``cell.json`` with the
same config key) is not touched again. The labelled data (preprocessing, model inputs, the union of every
network's appearance extras and training targets) is prepared ONCE for all cells; ``--prepare-only`` writes it
to ``OUTPUT_DIR/compare/data.npz`` and ``--data FILE`` reads it back, so a machine without the dataset (a GPU
box) can run the cells. A dataset with its own split (FER2013) has no folds and is refused with one ``error:`` line
(:func:`~pipeline.data.labelled.refuse_own_split`).

Table columns: accuracy mean and std over folds, mean class accuracy (unweighted recall, pooled confusion),
parameters, multiply-accumulates per sequence (convolutions, matrix products and resampling, as
:func:`pipeline.compare.cost.count_macs` says; one sequence at the configured input size; both times
``train.ensemble``),
training seconds per fold (fit + test prediction, mean over folds), prediction milliseconds per sequence
(``predict_proba(exact=True)``: fixed-shape chunks of 16 sequences, float32, on the CV device, ``train.threads`` CPU
threads).
Written to ``OUTPUT_DIR/compare/comparison.{md,csv,png}`` (:mod:`pipeline.compare.report`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.compare.cost import count_macs, count_parameters
from pipeline.compare.report import TABLE_COLUMNS, write_comparison
from pipeline.config import Config
from pipeline.cv.run import config_hash_of, resolve_device, run_cv
from pipeline.data.labelled import (
    LabelledData,
    data_key,
    load_labelled_data,
    load_labelled_npz,
    refuse_own_split,
    save_labelled_data,
)
from pipeline.errors import ConfigError
from pipeline.model_folder.format import member_files
from pipeline.runtime.output_folder import check_replaceable, claim_folder
from pipeline.runtime.run_key import data_identity, run_key
from stages.atomic_io import atomic_write_text
from stages.learning.inputs.extras import ModelNeeds, append_extras, needs_of
from stages.learning.models import build_model, list_models
from stages.learning.training.checkpoint import load_checkpoint
from stages.learning.training.divergence import TrainingDiverged
from stages.learning.training.predict import ensemble_proba

log = logging.getLogger(__name__)

DEFAULT_MODELS: tuple[str, ...] = ("skipnet", "dtan", "dba", "resmask", "pcnn", "fn2en")
DEFAULT_STREAMS: tuple[str, ...] = ("appearance", "fused")
COMPARE_STREAMS: tuple[str, ...] = ("appearance", "fused")
DATA_FILE = "data.npz"
CELL_FILE = "cell.json"
PREDICT_TIMING_SEQUENCES = 64


# --- cells ------------------------------------------------------------------------------------------------------


def parse_list(
    text: str | Sequence[str] | None, default: Sequence[str], allowed: Sequence[str], what: str
) -> list[str]:
    """Comma-separated names -> list (order kept, duplicates dropped); :class:`ConfigError` on an unknown one."""
    if text is None:
        return list(default)
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(s.strip() for s in items if s.strip()))
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ConfigError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(allowed)}")
    return names


def compare_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "compare"


def cell_name(model: str, streams: str) -> str:
    return f"{model}_{streams}"


def cell_config(cfg: Config, model: str, streams: str) -> Config:
    """``cfg`` with the appearance network and streams overridden, writing to its own folder but sharing the
    base run's cache and manifest. ``model.appearance.options`` are kept only for the network they were
    written for (the base config's)."""
    out = cfg.model_copy(deep=True)
    base_name = cfg.model.appearance.name
    out.output_dir = compare_dir(cfg) / cell_name(model, streams)
    out.preprocess.cache_dir = cfg.cache_dir
    out.data.manifest = cfg.manifest_path
    app = cfg.model.appearance.model_copy(
        update={"name": model, "options": cfg.model.appearance.options if model == base_name else {}}
    )
    out.model = cfg.model.model_copy(update={"appearance": app, "streams": streams})
    return out


def cell_data(data: LabelledData, needs: ModelNeeds) -> LabelledData:
    """The shared data with the cell's appearance extras appended and only its training targets kept."""
    if needs.extras and data.landmarks is None:
        raise ConfigError("prepared data has no landmarks; appearance extras cannot be rendered")
    return replace(
        data,
        appearance=append_extras(data.appearance, data.landmarks, needs.extras),
        targets={k: data.targets[k] for k in needs.targets},
    )


def _cell_key(cfg: Config, folds: list[int], data: LabelledData) -> str:
    return run_key("compare-cell", config_hash_of(cfg), folds, data_identity(data))


def _predict_ms(cfg: Config, data: LabelledData, fold_dir: Path, device: str) -> float:
    """Milliseconds per sequence of :func:`ensemble_proba` (exact: chunks of 16 sequences) with the fold's networks
    (one, or the members of a ``train.ensemble``)."""
    models = [load_checkpoint(path)[0] for path in member_files(fold_dir)]
    rows = np.arange(min(PREDICT_TIMING_SEQUENCES, len(data.labels)))
    subset = data.subset(rows)
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.train.threads)
    try:
        ensemble_proba(models, data.subset(rows[:2]), device=device)  # warm-up (first CUDA call, allocations)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ensemble_proba(models, subset, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        return 1000.0 * (time.perf_counter() - start) / max(len(rows), 1)
    finally:
        torch.set_num_threads(previous)


def run_cell(cfg: Config, data: LabelledData, use_ray: bool = True) -> dict:
    """One CV run (resumed) plus its size and speed figures; returns the cell's table row (also ``cell.json``).
    A network that diverges ends the comparison with a :class:`TrainingDiverged` naming the cell, fold and epoch."""
    folder = Path(cfg.output_dir)
    folds = sorted(set(data.folds.tolist()))
    folds = folds if cfg.cv.run_folds is None else [f for f in cfg.cv.run_folds if f in folds]
    key = _cell_key(cfg, folds, data)
    done = folder / CELL_FILE
    if done.is_file():
        try:
            previous = json.loads(done.read_text())
        except (OSError, ValueError):
            previous = None  # damaged: the cell is re-run (its folds resume)
        if isinstance(previous, dict) and previous.get("key") == key and isinstance(previous.get("row"), dict):
            log.info(f"compare: {folder.name} already finished, not re-run")
            return previous["row"]
    try:
        summary = run_cv(cfg, data, use_ray=use_ray)
    except TrainingDiverged as exc:  # one error line that also names the cell
        raise TrainingDiverged(f"compare {folder.name}: {exc}") from None
    device = resolve_device(cfg.cv.device)
    model = build_model(cfg.model, len(data.classes), int(data.appearance.shape[1]), int(data.trajectory.shape[1]))
    one = torch.as_tensor(data.appearance[:1], dtype=torch.float32), torch.as_tensor(data.trajectory[:1])
    row = {
        "model": cfg.model.appearance.name,
        "streams": cfg.model.streams,
        "accuracy_mean": summary["accuracy_mean"],
        "accuracy_std": summary["accuracy_std"],
        "mean_class_accuracy": summary["mean_class_accuracy"],
        "parameters": count_parameters(model) * cfg.train.ensemble,  # an ensemble runs every member
        "macs_per_sequence": count_macs(model, *one) * cfg.train.ensemble,
        "train_seconds_per_fold": float(np.mean([f["seconds"] for f in summary["folds"]])),
        "predict_ms_per_sequence": _predict_ms(cfg, data, folder / "cv" / f"fold_{folds[0]}", device),
        "n_folds": len(summary["folds"]),
        "n_sequences": summary["n_sequences"],
        "device": device,
    }
    atomic_write_text(done, json.dumps({"key": key, "row": row}, indent=2))
    return row


# --- the verb ---------------------------------------------------------------------------------------------------


def run_compare(
    cfg: Config,
    models: Sequence[str] | str | None = None,
    streams: Sequence[str] | str | None = None,
    use_ray: bool = True,
    data_file: Path | None = None,
    prepare_only: bool = False,
) -> pd.DataFrame:
    """Prepare the data once, run every (network, streams) cell (skipping finished ones), write the report.

    ``data_file``: prepared data to read instead of preprocessing (from ``prepare_only``). Returns the table
    (also in ``OUTPUT_DIR/compare/comparison.csv``); with ``prepare_only`` an empty table after writing
    ``OUTPUT_DIR/compare/data.npz``.
    """
    start = time.perf_counter()
    model_names = parse_list(models, DEFAULT_MODELS, list_models("appearance"), "appearance model(s)")
    stream_names = parse_list(streams, DEFAULT_STREAMS, COMPARE_STREAMS, "streams")
    cells = [cell_config(cfg, m, s) for m in model_names for s in stream_names]
    cell_needs = [needs_of(c.model) for c in cells]
    needs = ModelNeeds()
    for n in cell_needs:
        needs = needs | n
    shared = ModelNeeds((), needs.targets)  # extras are appended per cell
    key = data_key(cfg)
    out = compare_dir(cfg)
    check_replaceable(out, "compare")  # a folder of someone's files is refused before any work; marked when written
    if data_file is not None:
        data = load_labelled_npz(data_file, key)
        missing = [t for t in needs.targets if t not in data.targets]
        if missing:
            raise ConfigError(
                f"prepared data {data_file} lacks the training targets {', '.join(missing)} that "
                f"{', '.join(model_names)} need; prepare it again with --prepare-only and these --models"
            )
    else:
        data = load_labelled_data(cfg, needs=shared, refuse_split="compare")
    if data.splits is not None:  # a dataset with its own split: train, then evaluate its test split once
        raise refuse_own_split(cfg, "compare")
    claim_folder(out, "compare")
    if prepare_only:
        path = save_labelled_data(out / DATA_FILE, data, key)
        log.info(f"compare: prepared data for {len(data.labels)} sequences written to {path}")
        return pd.DataFrame(columns=TABLE_COLUMNS)
    rows = []
    for cell, cneeds in zip(cells, cell_needs, strict=True):
        log.info(f"compare: {Path(cell.output_dir).name}")
        rows.append(run_cell(cell, cell_data(data, cneeds), use_ray=use_ray))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    write_comparison(cfg, table, out, time.perf_counter() - start, data)
    log.info((out / "comparison.md").read_text())
    return table
