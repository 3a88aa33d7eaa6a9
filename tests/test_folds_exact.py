"""Our vectorised StratifiedGroupKFold gives sklearn's folds exactly (sklearn is the oracle, tests only)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fixtures_datasets import ckplus_like_manifest
from sklearn.model_selection import StratifiedGroupKFold

from data_manifests import folds
from data_manifests.folds import assign_folds, stratified_group_kfold


def sklearn_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> dict[str, int] | str:
    """Group -> fold from sklearn's split, or ``"ValueError"`` when sklearn refuses."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    out: dict[str, int] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
                for g in np.unique(groups[test]):
                    out[str(g)] = k
    except ValueError:
        return "ValueError"
    return out


def our_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> dict[str, int] | str:
    try:
        names, fold = stratified_group_kfold(y, groups, n_splits, seed)
    except ValueError:
        return "ValueError"
    return {str(g): int(k) for g, k in zip(names, fold, strict=True)}


def random_input(seed: int, n_classes: int, singleton_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Groups of 1-20 rows (``singleton_share`` of them single rows), imbalanced classes."""
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(20, 150))
    sizes = np.where(rng.random(n_groups) < singleton_share, 1, rng.integers(1, 21, n_groups))
    groups = np.repeat(np.array([f"g{i:04d}" for i in rng.permutation(n_groups)], dtype=object), sizes)
    p = rng.dirichlet(np.full(n_classes, 0.7))
    y = np.array([f"c{c}" for c in rng.choice(n_classes, len(groups), p=p)], dtype=object)
    return y, groups


@pytest.mark.parametrize("n_splits", [2, 5, 10])
@pytest.mark.parametrize("case", range(18))
def test_random_inputs_match_sklearn(case: int, n_splits: int) -> None:
    n_classes = 2 + case % 7  # 2..8
    y, groups = random_input(1000 * n_splits + case, n_classes, singleton_share=(0.0, 0.5, 0.9)[case % 3])
    seed = 7919 * case + n_splits
    assert our_folds(y, groups, n_splits, seed) == sklearn_folds(y, groups, n_splits, seed)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
@pytest.mark.parametrize("n_splits", [2, 5, 10])
def test_singleton_groups_match_sklearn(seed: int, n_splits: int) -> None:
    """FER2013-like: every row its own group (exact ties between folds all the time)."""
    rng = np.random.default_rng(seed % 1000)
    n = 400
    y = np.array([f"c{c}" for c in rng.choice(7, n, p=[0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])], dtype=object)
    groups = np.array([f"img{i:05d}" for i in range(n)], dtype=object)
    assert our_folds(y, groups, n_splits, seed) == sklearn_folds(y, groups, n_splits, seed)


@pytest.mark.parametrize("n_splits", [2, 5, 10])
@pytest.mark.parametrize("profile", [(1, 0), (2, 1), (1, 1, 1), (3, 0, 0, 1)])
def test_identical_profiles_match_sklearn(profile: tuple[int, ...], n_splits: int) -> None:
    """Every group with the same class counts: all groups tie in the sort, folds tie in the choice."""
    n_groups = 37
    labels = [f"c{k}" for k, n in enumerate(profile) for _ in range(n)]
    y = np.array(labels * n_groups, dtype=object)
    groups = np.repeat(np.array([f"g{i:02d}" for i in range(n_groups)], dtype=object), len(labels))
    # a class of no member in `profile` is absent; add a lone group holding one row of each class
    y = np.concatenate([y, np.array([f"c{k}" for k in range(len(profile))], dtype=object)])
    groups = np.concatenate([groups, np.array(["zz"] * len(profile), dtype=object)])
    for seed in (0, 3, 11):
        assert our_folds(y, groups, n_splits, seed) == sklearn_folds(y, groups, n_splits, seed)


@pytest.mark.parametrize("n_classes", [1, 2, 8, 12, 20])
def test_every_candidate_eval_is_bit_identical(monkeypatch: pytest.MonkeyPatch, n_classes: int) -> None:
    """The evaluations of all candidate folds equal sklearn's ``np.mean(np.std(...))`` bit for bit (one class:
    numpy sums pairwise; 8 or more classes: the mean over classes is pairwise too)."""
    y, groups = random_input(n_classes, n_classes, singleton_share=0.5)
    if n_classes == 1:
        y = np.array(["c0"] * len(y), dtype=object)
    ours: list[list[float]] = []
    scan = folds._scan

    def record(evals: list[float], samples: list[int]) -> int:
        ours.append(list(evals))
        return scan(evals, samples)

    monkeypatch.setattr(folds, "_scan", record)
    theirs: list[list[float]] = []
    find_best = StratifiedGroupKFold._find_best_fold

    def record_sklearn(self, y_counts_per_fold, y_cnt, group_y_counts):  # noqa: ANN001, ANN202
        evals = []
        for i in range(self.n_splits):
            y_counts_per_fold[i] += group_y_counts
            evals.append(float(np.mean(np.std(y_counts_per_fold / y_cnt.reshape(1, -1), axis=0))))
            y_counts_per_fold[i] -= group_y_counts
        theirs.append(evals)
        return find_best(self, y_counts_per_fold, y_cnt, group_y_counts)

    monkeypatch.setattr(StratifiedGroupKFold, "_find_best_fold", record_sklearn)
    assert our_folds(y, groups, 10, 5) == sklearn_folds(y, groups, 10, 5)
    assert len(ours) == len(theirs) == len(np.unique(groups))
    assert ours == theirs


def sklearn_scan(evals: list[float], samples: list[int]) -> int:
    """``StratifiedGroupKFold._find_best_fold``'s choice, transcribed with ``np.isclose``."""
    best, min_eval, min_samples = None, np.inf, np.inf
    for i, (fold_eval, n) in enumerate(zip(evals, samples, strict=True)):
        if fold_eval < min_eval or (np.isclose(fold_eval, min_eval) and n < min_samples):
            best, min_eval, min_samples = i, fold_eval, n
    return best


def test_near_ties_follow_the_sequential_scan() -> None:
    """isclose is not transitive: the scan's running minimum decides, not the global minimum."""
    tol = 1e-05
    assert folds._scan([1.0, 1.0 + 0.9 * tol, 1.0 + 1.7 * tol], [5, 4, 3]) == 2  # 1 close to 0, 2 close to 1 only
    assert folds._scan([1.0, 1.0 + 0.9 * tol, 1.0 + 1.7 * tol], [5, 6, 3]) == 0
    rng = np.random.default_rng(0)
    for _ in range(1000):
        base = float(rng.choice([0.0, 1e-4, 0.3, 1.0]))
        evals = (base + rng.integers(-3, 4, 10) * rng.choice([0.45, 0.9, 1.1]) * (1e-08 + tol * base)).tolist()
        samples = rng.integers(0, 4, 10).tolist()
        assert folds._scan(evals, samples) == sklearn_scan(evals, samples)


@pytest.mark.parametrize(
    ("labels", "n_groups", "n_splits", "seed"),
    [
        (["a"] * 4 + ["b"] * 3, 7, 5, 0),  # every class smaller than n_splits
        (["a"] * 6 + ["b"] * 6, 4, 5, 0),  # fewer groups than folds
        (["a"] * 3 + ["b"] * 3, 6, 10, 0),  # fewer samples than folds
        (["a"] * 8 + ["b"] * 8, 16, 2, 2**32),  # seed out of RandomState's range
        (["a"] * 8 + ["b"] * 8, 16, 2, -1),
        (["a"] * 5 + ["b"] * 2, 7, 5, 1),  # only class a reaches n_splits: allowed
    ],
)
def test_refusals_match_sklearn(labels: list[str], n_groups: int, n_splits: int, seed: int) -> None:
    y = np.array(labels, dtype=object)
    groups = np.array([f"g{i % n_groups}" for i in range(len(y))], dtype=object)
    assert our_folds(y, groups, n_splits, seed) == sklearn_folds(y, groups, n_splits, seed)


def sklearn_group_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> dict[str, int]:
    """The former ``folds._stratified_group_folds``: sklearn's folds, round-robin when sklearn refuses."""
    found = sklearn_folds(y, groups, n_folds, seed)
    if isinstance(found, dict):
        return found
    subjects = sorted(set(groups.tolist()))
    order = np.random.default_rng(seed).permutation(len(subjects))
    return {subjects[i]: pos % n_folds for pos, i in enumerate(order)}


@pytest.mark.parametrize(("manifest_seed", "n_folds", "seed"), [(0, 10, 0), (3, 10, 17), (5, 5, 2), (1, 2, 9)])
def test_assign_folds_on_ckplus_like_unchanged(
    monkeypatch: pytest.MonkeyPatch, manifest_seed: int, n_folds: int, seed: int
) -> None:
    df = ckplus_like_manifest(seed=manifest_seed)
    ours = assign_folds(df, n_folds, seed)
    monkeypatch.setattr(folds, "_stratified_group_folds", sklearn_group_folds)
    expected = assign_folds(df, n_folds, seed)
    pd.testing.assert_frame_equal(ours, expected)


def test_assign_folds_round_robin_when_every_class_is_small() -> None:
    df = pd.DataFrame(
        {
            "sequence_id": [f"P{i}_001" for i in range(6)],
            "subject": [f"P{i}" for i in range(6)],
            "label": ["anger", "happy", "fear", "anger", "happy", "fear"],
            "labelled": True,
        }
    )
    ours = assign_folds(df, 3, 4)
    y = df["label"].to_numpy(dtype=object)
    groups = df["subject"].to_numpy(dtype=object)
    expected = sklearn_group_folds(y, groups, 3, 4)
    assert dict(zip(ours["subject"], ours["fold"].astype(int), strict=True)) == expected
