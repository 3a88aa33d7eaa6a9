"""CV report metrics (pipeline.cv.reports): the pooled confusion matrix, the mean class accuracy and macro F1."""

from __future__ import annotations

import math
import warnings

import numpy as np

from pipeline.cv.reports import accuracy, class_scores, confusion, macro_f1, mean_class_accuracy


def test_confusion_keeps_every_class_even_when_absent() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 3])  # class 2 never occurs, class 3 is only predicted
    cm = confusion(labels, preds, 4)
    assert cm.shape == (4, 4) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_mean_class_accuracy_averages_recall_over_true_classes_only() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the predicted-only class 3 must not warn
        # recall 1/2 for class 0 and 2/3 for class 1; class 3 (never true) and class 2 (absent) add no term
        assert math.isclose(mean_class_accuracy(labels, preds), (1 / 2 + 2 / 3) / 2)
    # unbalanced classes weigh equally, unlike plain accuracy (7/9 here)
    assert math.isclose(mean_class_accuracy(np.array([0] * 8 + [1]), np.array([0] * 7 + [1, 0])), (7 / 8 + 0) / 2)
    assert math.isnan(mean_class_accuracy(np.array([], dtype=int), np.array([], dtype=int)))


def test_accuracy_is_the_argmax_hit_rate_and_nan_for_no_rows() -> None:
    proba = np.array([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    assert accuracy(proba, np.array([0, 1, 1])) == 2 / 3
    assert math.isnan(accuracy(np.zeros((0, 2)), np.array([], dtype=int)))


def test_macro_f1_averages_over_true_classes_only() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 3])
    # class 0: P 1, R 1/2 -> F1 2/3; class 1: P 2/3, R 2/3 -> F1 2/3; class 3 (never true) adds no term
    assert math.isclose(macro_f1(labels, preds), 2 / 3)
    per = class_scores(labels, preds, [0, 1, 3])
    np.testing.assert_allclose(per["precision"], [1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(per["recall"], [0.5, 2 / 3, 0.0])
    assert math.isnan(macro_f1(np.array([], dtype=int), np.array([], dtype=int)))
