"""An evaluation's prediction table and its scores: accuracy, mean class accuracy and macro F1, over the model's
classes and restricted to the classes the data shares with it, and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.cv.reports import accuracy, class_scores, confusion, macro_f1, mean_class_accuracy
from stages.record import SequenceStatus

TABLE_COLUMNS = ["sequence_id", "subject", "label", "pred", "pred_shared", "status", "reason"]
"""predictions.csv's first columns; ``p_<class>`` for every model class follow."""


def prediction_table(
    rows: pd.DataFrame, results: dict[str, dict], classes: list[str], shared: list[str]
) -> pd.DataFrame:
    """One row per sequence of ``rows`` (the scored manifest rows, in order): ``sequence_id, subject, label,
    pred, pred_shared, status, reason, p_<class>...`` for every model class in ``classes``. ``results``:
    sequence_id -> `seqfer predict`'s result row. ``pred`` is the argmax over every model class,
    ``pred_shared`` the argmax over the ``shared`` classes only; both are empty and the probabilities NaN for a
    sequence whose status is not ok."""
    p_cols = [f"p_{c}" for c in classes]
    table = []
    for sid, subject, label in zip(rows["sequence_id"], rows["subject"], rows["label"], strict=True):
        result = results[sid]
        ok = result["status"] == SequenceStatus.OK
        probs = [float(result[c]) if ok and result.get(c) is not None else float("nan") for c in p_cols]
        table.append(
            {
                "sequence_id": sid,
                "subject": subject,
                "label": label,
                "pred": classes[int(np.argmax(probs))] if ok else "",
                "pred_shared": max(shared, key=lambda c: probs[classes.index(c)]) if ok else "",
                "status": str(result["status"]),
                "reason": result.get("reason") or "",
                **dict(zip(p_cols, probs, strict=True)),
            }
        )
    return pd.DataFrame(table, columns=[*TABLE_COLUMNS, *p_cols])


@dataclass
class Scores:
    """The scores of the ok rows of a prediction table.

    ``accuracy`` / ``mean_class_accuracy`` (unweighted recall over the true classes present) / ``macro_f1``
    (unweighted F1 over the same classes): argmax over every model class. ``*_shared``: argmax over the scored
    (shared) classes only, the usual cross-dataset protocol when the model knows classes the data lacks.
    ``accuracy_all`` / ``accuracy_shared_all``: the same accuracies over every row of the table, a row that is not
    ok (no face, unreadable) counted wrong: published figures count every test image, so this is the one to
    compare with them. ``per_class``: per scored class ``n`` (ok rows), ``accuracy`` (recall), ``precision`` and
    ``f1``. ``confusion``: counts, rows true (model classes), columns predicted (model classes);
    ``scored_confusion`` its rows of the scored classes. NaN scores when no row is ok (``*_all``: no row).
    """

    n_scored: int
    n_failed: int
    accuracy: float
    mean_class_accuracy: float
    macro_f1: float
    accuracy_shared: float
    mean_class_accuracy_shared: float
    macro_f1_shared: float
    accuracy_all: float
    accuracy_shared_all: float
    confusion: np.ndarray
    scored_confusion: np.ndarray
    per_class: dict[str, dict]


def score(table: pd.DataFrame, classes: list[str], scored: list[str]) -> Scores:
    """:class:`Scores` of ``table`` (see :func:`prediction_table`) for model ``classes`` and the ``scored``
    classes (a subset, in model order). Reuses the CV report's metric functions (:mod:`pipeline.cv.reports`)."""
    ok = table[table["status"] == SequenceStatus.OK]
    proba = ok[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64).reshape(len(ok), len(classes))
    y = np.array([classes.index(c) for c in ok["label"]], dtype=np.int64)
    yhat = np.argmax(proba, axis=1) if len(ok) else np.zeros(0, dtype=np.int64)
    shared_idx = [classes.index(c) for c in scored]
    y_shared = np.array([shared_idx.index(k) for k in y], dtype=np.int64)
    proba_shared = proba[:, shared_idx]
    yhat_shared = np.argmax(proba_shared, axis=1) if len(ok) else np.zeros(0, dtype=np.int64)
    cm = confusion(y, yhat, len(classes))
    scored_cm = cm[shared_idx]
    per = class_scores(y, yhat, shared_idx)
    per_class = {
        c: {
            "n": int(scored_cm[i].sum()),
            "accuracy": float(scored_cm[i, shared_idx[i]] / scored_cm[i].sum()) if scored_cm[i].sum() else None,
            "precision": float(per["precision"][i]),
            "f1": float(per["f1"][i]),
        }
        for i, c in enumerate(scored)
    }
    n_rows = len(table)
    return Scores(
        n_scored=len(ok),
        n_failed=n_rows - len(ok),
        accuracy=accuracy(proba, y),
        mean_class_accuracy=mean_class_accuracy(y, yhat),
        macro_f1=macro_f1(y, yhat),
        accuracy_shared=accuracy(proba_shared, y_shared),
        mean_class_accuracy_shared=mean_class_accuracy(y_shared, yhat_shared),
        macro_f1_shared=macro_f1(y_shared, yhat_shared),
        accuracy_all=float((yhat == y).sum() / n_rows) if n_rows else float("nan"),
        accuracy_shared_all=float((yhat_shared == y_shared).sum() / n_rows) if n_rows else float("nan"),
        confusion=cm,
        scored_confusion=scored_cm,
        per_class=per_class,
    )
