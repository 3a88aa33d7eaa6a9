"""Cross-validation reports: metrics, confusion matrix, training curves, summary.md. Pure functions of tables."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, confusion_matrix


def confusion(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts [n_classes, n_classes] int64, rows true, columns predicted, for integer class indices
    0..n_classes-1 (:func:`sklearn.metrics.confusion_matrix`); a class absent from both is a row and column of
    zeros."""
    return confusion_matrix(labels, preds, labels=np.arange(n_classes)).astype(np.int64)


def accuracy(proba: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``proba`` [N, K] whose argmax is ``labels`` [N]; NaN for no rows."""
    return float((np.argmax(proba, axis=1) == labels).mean()) if len(labels) else float("nan")


def mean_class_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Unweighted mean of per-class recall (:func:`sklearn.metrics.balanced_accuracy_score`) over the classes
    that occur in ``labels``: a class that is only predicted, never true, adds no term (its false positives still
    lower the recall of the true classes). NaN for no labels."""
    if len(labels) == 0:
        return float("nan")
    with warnings.catch_warnings():  # sklearn warns when it drops a predicted-only class, as intended here
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels, preds))


def save_confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.errstate(invalid="ignore", divide="ignore"):
        rates = cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.8 * len(classes)), dpi=110)
    ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{cm[i, j]}",
                ha="center",
                va="center",
                color="white" if np.nan_to_num(rates[i, j]) > 0.6 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_curves_png(curves: pd.DataFrame, path: Path) -> None:
    """Per-epoch loss and accuracy, one line per fold (and per ensemble member when ``curves`` has a ``member``
    column), train dashed, validation solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    keys = ["fold", "member"] if "member" in curves else ["fold"]
    for key, g in curves.groupby(keys):
        label = f"fold {key[0]}" + (f" member {key[1]}" if len(key) > 1 else "")
        for ax, metric in zip(axes, ("loss", "acc"), strict=True):
            line = ax.plot(g["epoch"], g[f"val_{metric}"], label=label, linewidth=1)[0]
            ax.plot(g["epoch"], g[f"train_{metric}"], linestyle="--", linewidth=0.8, color=line.get_color())
    axes[0].set_title("loss (train dashed, validation solid)", fontsize=9)
    axes[1].set_title("accuracy (train dashed, validation solid)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_markdown(summary: dict, classes: list[str], cm: np.ndarray) -> str:
    """A short human-readable report of a CV run."""
    lines = [
        f"# Cross-validation: {summary['model']}",
        "",
        f"- dataset: {summary['dataset']} ({summary['n_sequences']} test predictions, "
        f"{summary['n_subjects']} subjects, {len(summary['folds'])} folds, subject-independent)",
        f"- accuracy: **{100 * summary['accuracy_mean']:.2f} +/- {100 * summary['accuracy_std']:.2f} %** "
        f"(mean +/- std over folds); pooled {100 * summary['accuracy_pooled']:.2f} %",
        f"- mean class accuracy (unweighted recall): {100 * summary['mean_class_accuracy']:.2f} %",
        *(
            [
                f"- ensemble of {summary['ensemble']} networks per fold (`train.ensemble`), probabilities averaged; "
                f"its networks alone: {100 * summary['member_accuracy_mean']:.2f} % (mean over folds and networks)"
            ]
            if summary.get("ensemble", 1) > 1
            else []
        ),
        "- model selection: best validation epoch on held-out TRAINING subjects; the test fold is never used",
        f"- excluded (failed preprocessing): {summary['n_excluded']}",
        f"- wall time: {summary['seconds']:.0f} s on {summary['device']}",
        "",
        "| fold | accuracy | n_test | best epoch | train s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in summary["folds"]:
        lines.append(
            f"| {f['fold']} | {100 * f['accuracy']:.2f} | {f['n_test']} | {f['best_epoch']} | {f['seconds']:.0f} |"
        )
    lines += [
        "",
        "Pooled confusion matrix (rows true, columns predicted):",
        "",
        "| | " + " | ".join(classes) + " |",
        "|---" * (len(classes) + 1) + "|",
    ]
    for i, c in enumerate(classes):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in cm[i]) + " |")
    return "\n".join(lines) + "\n"
