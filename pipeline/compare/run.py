"""`seqfer compare`: the same subject-independent folds for several appearance networks x stream settings, one
table (Markdown + CSV) and one picture.

Every cell (network, streams) is an ordinary CV run (:func:`pipeline.cv.run.run_cv`) in its own folder
``OUTPUT_DIR/compare/<network>_<streams>/cv/`` with the config's ``model.appearance.name`` and
``model.streams`` overridden; so its folds resume like any CV run, and a finished cell (``cell.json`` with the
same config key) is not touched again. The labelled data (preprocessing, model inputs, the union of every
network's appearance extras and training targets) is prepared ONCE for all cells; ``--prepare-only`` writes it
to ``OUTPUT_DIR/compare/data.npz`` and ``--data FILE`` reads it back, so a machine without the dataset (a GPU
box) can run the cells.

Table columns: accuracy mean and std over folds, mean class accuracy (unweighted recall, pooled confusion),
parameters, multiply-accumulates per sequence (convolutions, matrix products and resampling, as
:func:`count_macs` says; one sequence at the configured input size; both times ``train.ensemble``),
training seconds per fold (fit + test prediction, mean over folds), prediction milliseconds per sequence
(one sequence at a time, ``predict_proba(exact=True)``, on the CV device, ``train.threads`` CPU threads).
Written to ``OUTPUT_DIR/compare/comparison.{md,csv,png}``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.config import Config
from pipeline.cv.run import config_hash_of, resolve_device, run_cv
from pipeline.data.labelled import (
    LabelledData,
    data_key,
    load_labelled_data,
    load_labelled_npz,
    save_labelled_data,
)
from pipeline.errors import ConfigError
from pipeline.model_folder.folder import member_files
from pipeline.runtime.output_folder import check_replaceable, claim_folder
from pipeline.runtime.run_key import data_identity, run_key
from stages.atomic_io import atomic_write_text
from stages.learning.inputs.extras import ModelNeeds, append_extras, needs_of
from stages.learning.models import build_model, list_models
from stages.learning.training.fit import ensemble_proba, load_checkpoint

DEFAULT_MODELS: tuple[str, ...] = ("skipnet", "dtan", "dba", "resmask", "pcnn", "fn2en")
DEFAULT_STREAMS: tuple[str, ...] = ("appearance", "fused")
COMPARE_STREAMS: tuple[str, ...] = ("appearance", "fused")
DATA_FILE = "data.npz"
CELL_FILE = "cell.json"
PREDICT_TIMING_SEQUENCES = 64
TABLE_COLUMNS = [
    "model",
    "streams",
    "accuracy_mean",
    "accuracy_std",
    "mean_class_accuracy",
    "parameters",
    "macs_per_sequence",
    "train_seconds_per_fold",
    "predict_ms_per_sequence",
    "n_folds",
    "n_sequences",
    "device",
]


# --- model size -------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not), buffers excluded."""
    return int(sum(p.numel() for p in model.parameters()))


def _grid_sample_flops(x_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.grid_sampler_2d`` (``F.grid_sample``), which torch's table leaves out: bilinear
    interpolation weighs 4 source pixels per output value (4 multiply-accumulates = 8 FLOPs); nearest and
    bicubic are counted the same way, an approximation."""
    return 8 * math.prod(out_shape)


def _affine_grid_flops(theta_shape, size, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.affine_grid_generator`` (``F.affine_grid``): each (x, y) of the [N, H, W, 2] grid is a
    row of a [2, 3] matrix times (x, y, 1), 3 multiply-accumulates."""
    return 6 * math.prod(out_shape)


MAC_FORMULAS = {
    torch.ops.aten.grid_sampler_2d: _grid_sample_flops,
    torch.ops.aten.affine_grid_generator: _affine_grid_flops,
}
"""FLOP formulas added to torch's own table (:mod:`torch.utils.flop_counter`) for ops our networks use."""


def count_macs(model: nn.Module, app: torch.Tensor | None, traj: torch.Tensor | None = None) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on the given batch: FLOPs counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`, halved (one MAC = 2 FLOPs).

    Counted: every convolution (output elements x in_channels / groups x kernel size), matrix product (Linear:
    output elements x in_features; ``matmul``/``bmm``), attention, and resampling (``F.affine_grid``: 3 MACs per
    grid coordinate; ``F.grid_sample``: 4 per output value), which is pcnn's region crops (see
    :data:`MAC_FORMULAS`). The hook counter this replaced saw only Conv and Linear layers; the figures differ
    for pcnn alone (+0.1%). Not counted: biases, normalisation,
    pooling, activations, nearest-neighbour upsampling and other element-wise arithmetic. A
    :class:`~stages.learning.models.TwoStream` gets ``model(app, traj)``, anything else ``model(app)``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=MAC_FORMULAS)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            if hasattr(model, "prediction_key"):
                model(app, traj)
            else:
                model(app)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


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
    """Milliseconds per sequence of :func:`ensemble_proba` (one sequence at a time) with the fold's networks
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
    """One CV run (resumed) plus its size and speed figures; returns the cell's table row (also ``cell.json``)."""
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
            print(f"compare: {folder.name} already finished, not re-run", file=sys.stderr)
            return previous["row"]
    summary = run_cv(cfg, data, use_ray=use_ray)
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


# --- report -----------------------------------------------------------------------------------------------------


def comparison_markdown(table: pd.DataFrame, header: list[str]) -> str:
    """The comparison table as Markdown, preceded by ``header`` lines."""
    lines = [
        *header,
        "",
        "| model | streams | accuracy % (mean +/- std) | mean class acc. % | parameters | MMAC / seq | "
        "train s / fold | predict ms / seq |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.model} | {r.streams} | {100 * r.accuracy_mean:.2f} +/- {100 * r.accuracy_std:.2f} | "
            f"{100 * r.mean_class_accuracy:.2f} | {int(r.parameters):,} | {r.macs_per_sequence / 1e6:.1f} | "
            f"{r.train_seconds_per_fold:.1f} | {r.predict_ms_per_sequence:.2f} |"
        )
    return "\n".join(lines) + "\n"


def save_comparison_png(table: pd.DataFrame, path: Path, title: str) -> None:
    """Left: accuracy (mean +/- std over folds) per network, one bar per streams setting. Right: accuracy
    against multiply-accumulates per sequence (log scale), one marker per cell."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(table["model"]))
    streams = list(dict.fromkeys(table["streams"]))
    fig, (ax_bar, ax_cost) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    width = 0.8 / len(streams)
    for j, s in enumerate(streams):
        sub = table[table["streams"] == s].set_index("model").reindex(models)
        x = np.arange(len(models)) + (j - (len(streams) - 1) / 2) * width
        ax_bar.bar(x, 100 * sub["accuracy_mean"], width, yerr=100 * sub["accuracy_std"], capsize=3, label=s)
        ax_cost.scatter(sub["macs_per_sequence"] / 1e6, 100 * sub["accuracy_mean"], label=s)
        for m, r in sub.dropna(subset=["accuracy_mean"]).iterrows():
            ax_cost.annotate(
                m,
                (r["macs_per_sequence"] / 1e6, 100 * r["accuracy_mean"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax_bar.set_xticks(range(len(models)), models)
    ax_bar.set_ylabel("accuracy % (mean +/- std over folds)")
    ax_bar.set_ylim(0, 105)
    ax_cost.set_xscale("log")
    ax_cost.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax_cost.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax_cost.tick_params(axis="x", which="minor", labelsize=7)
    ax_cost.set_xlabel("MMAC per sequence (log scale)")
    ax_cost.set_ylabel("accuracy % (mean over folds)")
    for ax in (ax_bar, ax_cost):
        ax.legend(
            title="streams",
            fontsize=8,
            title_fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=len(streams),
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_comparison(cfg: Config, table: pd.DataFrame, out: Path, seconds: float, data: LabelledData) -> None:
    """``comparison.csv``, ``comparison.md`` and ``comparison.png`` in ``out``."""
    table = table[TABLE_COLUMNS]
    table.to_csv(out / "comparison.csv", index=False)
    folds = sorted(set(data.folds.tolist())) if cfg.cv.run_folds is None else cfg.cv.run_folds
    header = [
        "# Model comparison",
        "",
        f"- dataset: {cfg.data.root} ({cfg.data.format}), {len(data.labels)} labelled sequences, "
        f"{len(set(data.subjects))} subjects, classes {', '.join(data.classes)}",
        f"- folds: {len(folds)} subject-independent (same folds for every cell); epoch chosen on held-out "
        "training subjects",
        f"- input: {cfg.model.input.appearance} (k={cfg.model.input.k}), {cfg.model.input.size} px; geometry "
        f"{cfg.model.geometry.name}; training {cfg.train.epochs} epochs max, batch {cfg.train.batch_size}",
        f"- device: {', '.join(sorted(set(table['device'])))}; wall time of this command: {seconds:.0f} s "
        f"(cells run earlier and reused are not included)",
    ]
    (out / "comparison.md").write_text(comparison_markdown(table, header))
    save_comparison_png(table, out / "comparison.png", f"{cfg.data.root}: {len(folds)} folds, {len(data.labels)} seq.")


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
        data = load_labelled_data(cfg, needs=shared)
    claim_folder(out, "compare")
    if prepare_only:
        path = save_labelled_data(out / DATA_FILE, data, key)
        print(f"compare: prepared data for {len(data.labels)} sequences written to {path}", file=sys.stderr)
        return pd.DataFrame(columns=TABLE_COLUMNS)
    rows = []
    for cell, cneeds in zip(cells, cell_needs, strict=True):
        print(f"compare: {Path(cell.output_dir).name}", file=sys.stderr)
        rows.append(run_cell(cell, cell_data(data, cneeds), use_ray=use_ray))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    write_comparison(cfg, table, out, time.perf_counter() - start, data)
    print((out / "comparison.md").read_text(), file=sys.stderr)
    return table
