"""Cross-validation reports: metrics, confusion matrix, training curves, summary.md; the run folder's report files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

from stages.atomic_io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.data.labelled import LabelledData


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


def class_scores(labels: np.ndarray, preds: np.ndarray, classes: list[int]) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall`` and ``f1`` [len(classes)] float64 of the class indices ``classes``
    (:func:`sklearn.metrics.precision_recall_fscore_support`; 0 where a class is never predicted or never true).
    Precision counts every prediction of the class, whatever the row's true class."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=classes, average=None, zero_division=0
    )
    return {"precision": precision, "recall": recall, "f1": f1}


def macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in ``labels`` (as
    :func:`mean_class_accuracy` averages their recall; a predicted-only class adds no term). NaN for no labels."""
    if len(labels) == 0:
        return float("nan")
    return float(class_scores(labels, preds, sorted(set(labels.tolist())))["f1"].mean())


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
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
        f"- mean class accuracy (unweighted recall): {100 * summary['mean_class_accuracy']:.2f} %; "
        f"macro F1: {100 * summary['macro_f1']:.2f} %",
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


def write_cv_report(
    cfg: Config, data: LabelledData, results: list[dict], out: Path, seconds: float, device: str
) -> dict:
    """Aggregate fold results into the run folder's tables, plots and summaries; returns summary.json's content."""
    classes = data.classes
    predictions = _predictions(data, results)
    _write_csv(predictions, out / "predictions.csv", index=False)
    y = np.array([classes.index(c) for c in predictions["label"]], dtype=np.int64)
    yhat = np.array([classes.index(c) for c in predictions["pred"]], dtype=np.int64)
    cm = confusion(y, yhat, len(classes))
    _write_csv(pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes), out / "confusion.csv")
    accs = np.array([r["accuracy"] for r in results])
    summary = {
        "model": cfg.model.streams
        + (f" ({cfg.model.appearance.name} + {cfg.model.geometry.name})" if cfg.model.streams == "fused" else ""),
        "dataset": str(cfg.data.root),
        "classes": classes,
        "accuracy_mean": float(accs.mean()) if len(accs) else float("nan"),
        "accuracy_std": float(accs.std(ddof=0)) if len(accs) else float("nan"),
        "accuracy_pooled": float((y == yhat).mean()) if len(y) else float("nan"),
        "mean_class_accuracy": mean_class_accuracy(y, yhat),
        "macro_f1": macro_f1(y, yhat),
        "n_sequences": int(len(predictions)),
        "n_subjects": int(len(set(data.subjects))),
        "n_excluded": int(len(data.excluded)),
        "seconds": seconds,
        "device": device,
        "ensemble": cfg.train.ensemble,
        "member_accuracy_mean": float(np.mean([m["accuracy"] for r in results for m in r.get("members", [r])]))
        if results
        else float("nan"),
        "folds": [
            {k: r[k] for k in ("fold", "accuracy", "n_test", "n_train", "n_val", "best_epoch", "seconds")}
            for r in results
        ],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "summary.md", summary_markdown(summary, classes, cm))
    save_confusion_png(
        cm,
        classes,
        out / "confusion.png",
        f"pooled confusion, accuracy {100 * summary['accuracy_mean']:.1f}% (mean over folds)",
    )
    curves = pd.concat([pd.read_csv(out / f"fold_{r['fold']}" / "history.csv") for r in results], ignore_index=True)
    _write_csv(curves, out / "curves.csv", index=False)
    save_curves_png(curves, out / "curves.png")
    splits = [
        {"fold": r["fold"], "part": part, "subject": s}
        for r in results
        for part in ("train", "val", "test")
        for s in r[f"{part}_subjects"]
    ]
    _write_csv(pd.DataFrame(splits), out / "splits.csv", index=False)
    _write_csv(data.excluded, out / "excluded.csv", index=False)
    return summary


def _predictions(data: LabelledData, results: list[dict]) -> pd.DataFrame:
    """One row per test prediction of every fold: sequence_id, subject, fold, label, pred, p_<class>..."""
    classes = data.classes
    row_of = {sid: i for i, sid in enumerate(data.sequence_ids.tolist())}
    rows = []
    for r in results:
        for sid, p in zip(r["test_ids"], r["proba"], strict=True):
            row = row_of[sid]
            rows.append(
                {
                    "sequence_id": data.sequence_ids[row],
                    "subject": data.subjects[row],
                    "fold": r["fold"],
                    "label": classes[data.labels[row]],
                    "pred": classes[int(np.argmax(p))],
                    **{f"p_{c}": float(v) for c, v in zip(classes, p, strict=True)},
                }
            )
    return pd.DataFrame(rows)


def _write_csv(table: pd.DataFrame, path: Path, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)
