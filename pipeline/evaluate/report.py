"""An evaluation's output files (metrics.json, predictions.csv, confusion.csv/.png) and the summary a user reads."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.cv.reports import save_confusion_png
from pipeline.evaluate.data import EvalData
from pipeline.evaluate.metrics import Scores
from stages.atomic_io import atomic_path, atomic_write_text
from stages.jsonable import json_default
from stages.record import SequenceStatus

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion.csv"
CONFUSION_PNG = "confusion.png"


def _number(value: float) -> float | None:
    """A score for JSON: None (null) for NaN, which strict JSON cannot hold."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def metrics_dict(
    scores: Scores, data: EvalData, table: pd.DataFrame, model: dict, source: dict, seconds: float
) -> dict:
    """metrics.json's content: the scores, what was scored and what was not (excluded classes, failed statuses,
    unlabelled reasons), the model (path, kind, fingerprint, classes) and the data (root, format, split...)."""
    failed = Counter(str(s) for s in table["status"] if s != SequenceStatus.OK)
    return {
        "accuracy": _number(scores.accuracy),
        "mean_class_accuracy": _number(scores.mean_class_accuracy),
        "macro_f1": _number(scores.macro_f1),
        "accuracy_shared": _number(scores.accuracy_shared),
        "mean_class_accuracy_shared": _number(scores.mean_class_accuracy_shared),
        "macro_f1_shared": _number(scores.macro_f1_shared),
        "accuracy_all": _number(scores.accuracy_all),
        "accuracy_shared_all": _number(scores.accuracy_shared_all),
        "n_scored": scores.n_scored,
        "classes": data.scored_classes,
        "per_class": scores.per_class,
        "excluded_classes": data.excluded,
        "n_excluded": sum(data.excluded.values()),
        "n_failed": sum(failed.values()),
        "failed": dict(sorted(failed.items())),
        "n_unlabelled": data.n_unlabelled,
        "unlabelled": data.unlabelled,
        "n_sequences": data.n_sequences,
        "model": model,
        "data": source,
        "seconds": round(seconds, 3),
    }


def write_outputs(out: Path, metrics: dict, scores: Scores, table: pd.DataFrame, classes: list[str]) -> None:
    """Write metrics.json, predictions.csv, confusion.csv (rows: the scored classes, columns: the model's
    classes) and confusion.png (every model class on both axes; a class the data lacks is a row of zeros) into
    ``out``, each atomically."""
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2, default=json_default) + "\n")
    with atomic_path(out / PREDICTIONS_FILE) as tmp:
        table.to_csv(tmp, index=False)
    cm = pd.DataFrame(scores.scored_confusion, index=pd.Index(metrics["classes"], name="true"), columns=classes)
    with atomic_path(out / CONFUSION_FILE) as tmp:
        cm.to_csv(tmp)
    shown = "n/a" if metrics["accuracy"] is None else f"{100 * metrics['accuracy']:.1f}%"
    save_confusion_png(
        scores.confusion,
        classes,
        out / CONFUSION_PNG,
        f"{metrics['data']['format']} {metrics['data']['root']}: accuracy {shown}, {scores.n_scored} scored",
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items())


def summary_lines(metrics: dict, out: Path) -> list[str]:
    """The lines the run prints: scores, the shared-class scores when they differ in meaning, the accuracy over
    every sequence when some failed, excluded classes, failed and unlabelled sequences, and where the files are."""
    restricted = len(metrics["classes"]) < len(metrics["model"]["classes"])
    lines = [
        f"evaluate: accuracy {_percent(metrics['accuracy'])}, mean class accuracy "
        f"{_percent(metrics['mean_class_accuracy'])}, macro F1 {_percent(metrics['macro_f1'])} on "
        f"{metrics['n_scored']} scored sequence(s) of {len(metrics['classes'])} class(es): "
        f"{', '.join(metrics['classes'])}"
    ]
    if restricted:
        lines.append(
            f"evaluate: predictions restricted to those classes: accuracy {_percent(metrics['accuracy_shared'])}, "
            f"mean class accuracy {_percent(metrics['mean_class_accuracy_shared'])}, "
            f"macro F1 {_percent(metrics['macro_f1_shared'])}"
        )
    if metrics["n_failed"]:
        shared = f" ({_percent(metrics['accuracy_shared_all'])} restricted)" if restricted else ""
        lines.append(
            f"evaluate: accuracy over all {metrics['n_scored'] + metrics['n_failed']} sequence(s), the "
            f"{metrics['n_failed']} failed counted wrong as published figures count them: "
            f"{_percent(metrics['accuracy_all'])}{shared}"
        )
    if metrics["excluded_classes"]:
        lines.append(f"evaluate: excluded, a class the model lacks: {_counts(metrics['excluded_classes'])}")
    if metrics["n_failed"]:
        lines.append(
            f"evaluate: failed, not scored: {_counts(metrics['failed'])} (reasons in {out / PREDICTIONS_FILE})"
        )
    if metrics["n_unlabelled"]:
        lines.append(f"evaluate: unlabelled, not scored: {_counts(metrics['unlabelled'])}")
    lines.append(f"evaluate: wrote {out / METRICS_FILE}, {PREDICTIONS_FILE}, {CONFUSION_FILE}, {CONFUSION_PNG}")
    return lines
