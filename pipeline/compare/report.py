"""The comparison report: ``comparison.csv``, ``comparison.md`` and ``comparison.png``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stages.atomic_io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.data.labelled import LabelledData

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
"""The comparison table's columns, in order."""


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_comparison(cfg: Config, table: pd.DataFrame, out: Path, seconds: float, data: LabelledData) -> None:
    """``comparison.csv``, ``comparison.md`` and ``comparison.png`` in ``out``."""
    table = table[TABLE_COLUMNS]
    with atomic_path(out / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
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
    atomic_write_text(out / "comparison.md", comparison_markdown(table, header))
    save_comparison_png(table, out / "comparison.png", f"{cfg.data.root}: {len(folds)} folds, {len(data.labels)} seq.")
