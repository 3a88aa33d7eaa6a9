"""Subject-independent folds: stratified-group k-fold over labelled sequences, or a user's fold file.

Folds are 0-based. Only labelled rows get a fold (unlabelled rows keep ``fold`` null); every sequence of a
subject lands in the same fold (``_neutral`` rows included, since they carry their sequence's subject).
A dataset with its own split (FER2013) gets no folds (:func:`has_own_split`; ``fold`` null).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.scan_common import read_small_csv

log = logging.getLogger(__name__)


def _labelled(df: pd.DataFrame) -> pd.Series:
    return df["labelled"].astype(bool) & df["label"].notna()


def has_own_split(df: pd.DataFrame) -> bool:
    """True when the manifest carries the dataset's own split (a non-null ``split``): it gets no CV folds, its
    ``fold`` stays null (see :mod:`data_manifests.schema`)."""
    return "split" in df.columns and bool(df["split"].notna().any())


def require_classes(df: pd.DataFrame) -> None:
    """Refuse labelled sequences of fewer than 2 classes with :class:`ManifestError`: a classifier of one class is
    always right, so its accuracy means nothing."""
    counts = df.loc[_labelled(df), "label"].astype(str).value_counts()
    if len(counts) < 2:
        found = f"only class {counts.index[0]!r} ({int(counts.iloc[0])} sequences)" if len(counts) else "no class"
        raise ManifestError(
            f"the labelled sequences hold {found}: classification needs at least 2 classes, so cross-validation "
            "and training are refused; label sequences of another class (or scan a folder holding several)"
        )


def warn_small_classes(df: pd.DataFrame, n_folds: int) -> None:
    """Warn (log) about the classes with fewer labelled sequences than ``n_folds``: some folds test none of them."""
    counts = df.loc[_labelled(df), "label"].astype(str).value_counts()
    small = counts[counts < n_folds].sort_index()
    if len(small):
        listed = ", ".join(f"{label} {int(n)}" for label, n in small.items())
        log.warning(
            "classes with fewer labelled sequences than the %d folds (some folds test none of them): %s",
            n_folds,
            listed,
        )


def assign_folds(df: pd.DataFrame, n_folds: int = 10, seed: int = 0) -> pd.DataFrame:
    """A copy of ``df`` (same row order) with ``fold`` set for labelled rows, null for the others.

    sklearn's ``StratifiedGroupKFold(shuffle=True, random_state=seed)`` algorithm on the labelled rows sorted by
    ``sequence_id``, so the result depends on the seed and the rows' content, not their order. The algorithm is
    reimplemented vectorised over the candidate folds (:func:`stratified_group_kfold`: identical folds, tested
    against sklearn) because sklearn's Python loop over groups x folds took ~13 s on FER2013-sized sets (28,709
    images, each its own subject); ours takes ~0.4 s. When the algorithm refuses (every class smaller than
    ``n_folds``) subjects are dealt round-robin in a seeded order; a fold left empty receives the smallest
    subject of the fold with the most subjects. Raises :class:`ManifestError` when there are fewer labelled
    subjects than folds or fewer than 2 classes (see :func:`require_classes`); warns about classes smaller than
    ``n_folds`` (:func:`warn_small_classes`).
    """
    if n_folds < 2:
        raise ManifestError(f"need at least 2 folds, got {n_folds}")
    require_classes(df)
    out = df.copy()
    lab = out[_labelled(out)].sort_values("sequence_id", kind="stable")
    subjects = sorted(lab["subject"].astype(str).unique())
    if len(subjects) < n_folds:
        advice = (
            f"use at most {len(subjects)} folds (--folds) or label more subjects"
            if len(subjects) >= 2
            else "subject-independent folds need labelled sequences of at least 2 subjects: label more"
        )
        raise ManifestError(
            f"only {len(subjects)} labelled subjects for {n_folds} folds: folds split by subject, so {advice}"
        )
    groups = lab["subject"].astype(str).to_numpy()
    warn_small_classes(df, n_folds)
    y = lab["label"].astype(str).to_numpy()
    fold_of = _stratified_group_folds(y, groups, n_folds, seed)
    fold_of = _fill_empty_folds(fold_of, lab["subject"].astype(str).value_counts().to_dict(), n_folds)
    out["fold"] = pd.array([pd.NA] * len(out), dtype="Int64")
    mask = _labelled(out)
    out.loc[mask, "fold"] = out.loc[mask, "subject"].astype(str).map(fold_of).astype("Int64")
    return out


def _stratified_group_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> dict[str, int]:
    """Fold of each group: :func:`stratified_group_kfold`, or, when it refuses (ValueError, e.g. every class
    smaller than ``n_folds``), the groups dealt round-robin in a seeded order."""
    try:
        names, fold = stratified_group_kfold(y, groups, n_folds, seed)
        return {str(g): int(k) for g, k in zip(names.tolist(), fold.tolist(), strict=True)}
    except ValueError:  # every class smaller than n_folds: no stratification possible
        subjects = sorted(set(groups.tolist()))
        order = np.random.default_rng(seed).permutation(len(subjects))
        return {subjects[i]: pos % n_folds for pos, i in enumerate(order)}


def stratified_group_kfold(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn 1.9's ``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)``, reimplemented.

    Returns ``(names, fold)``: the distinct groups (``np.unique(groups)``) and the 0-based test fold of each,
    identical to the fold whose test indices hold that group in sklearn's ``split(X, y, groups)`` (tested
    against sklearn in ``tests/test_folds_exact.py``). Same algorithm, same ``RandomState(seed)`` shuffle of the
    groups, same stable sort by decreasing class-count std, same greedy choice and tie-breaks, with every
    floating-point value computed by the same numpy reductions; only the evaluation of the ``n_splits``
    candidate folds of a group is one numpy evaluation instead of sklearn's Python loop. ``y`` holds class
    labels (strings or integers: binary or multiclass). Raises ValueError where sklearn does: ``n_splits`` above
    the number of samples or of groups, every class smaller than ``n_splits``, a seed outside ``0..2**32-1``.
    """
    y = np.asarray(y)
    if n_splits > len(y):
        raise ValueError(f"Cannot have number of splits n_splits={n_splits} greater than the number of samples")
    rng = np.random.RandomState(seed)  # sklearn's check_random_state(int)
    _, y_inv, y_cnt = np.unique(y, return_inverse=True, return_counts=True)
    if np.all(n_splits > y_cnt):
        raise ValueError(f"n_splits={n_splits} cannot be greater than the number of members in each class.")
    names, groups_inv = np.unique(groups, return_inverse=True)
    if n_splits > len(names):
        raise ValueError(f"Cannot have number of splits n_splits={n_splits} greater than the number of groups")
    counts = np.zeros((len(names), len(y_cnt)))
    np.add.at(counts, (groups_inv.ravel(), y_inv.ravel()), 1)
    perm = np.arange(len(names))
    rng.shuffle(perm)
    counts = counts[perm]  # row i: group perm[i]
    order = np.argsort(-np.std(counts, axis=1), kind="stable")
    fold_shuffled = _greedy_folds(counts, order, y_cnt, n_splits)
    fold = np.empty(len(names), dtype=np.int64)
    fold[perm] = fold_shuffled
    return names, fold


def _greedy_folds(counts: np.ndarray, order: np.ndarray, y_cnt: np.ndarray, n_splits: int) -> np.ndarray:
    """sklearn's loop over groups (rows of ``counts`` taken in ``order``) with ``_find_best_fold``: each group
    goes to the fold minimising the mean over classes of the std over folds of ``fold counts / y_cnt``, ties
    (``np.isclose``) to the fold with fewer samples, scanned in fold order.

    The ``n_splits`` candidates are evaluated at once: ``cand[f, c]`` is fold ``f``'s class fractions when the
    group joins fold ``c`` (the current fractions off the diagonal, fractions with the group on it). Reducing
    ``cand`` over its first axis adds the folds one after the other for every (candidate, class), exactly as
    ``np.std(axis=0)`` does on sklearn's (folds, classes) matrix; the std then takes the same ufuncs (divide,
    subtract, square, sum, divide, sqrt) and ``np.mean`` the same per-row reduction, so values are bit-identical.
    With a single class sklearn's matrix is one contiguous column, summed pairwise: then the folds run along the
    contiguous axis instead (``cand[c, f]``), which numpy sums the same way.
    """
    n_classes = len(y_cnt)
    fold_axis = 1 if n_classes == 1 else 0
    y_cnt = y_cnt.astype(np.float64)  # exact: what true_divide does with sklearn's int counts
    folds_div, classes_div = np.array(float(n_splits)), np.array(float(n_classes))  # 0-d: the fastest divisors
    per_fold = np.zeros((n_splits, n_classes))  # class counts per fold
    joined = np.empty_like(per_fold)  # per_fold + the group's counts, every fold
    joined_frac = np.empty_like(per_fold)  # joined / y_cnt
    cand = np.zeros((n_splits, n_splits, n_classes))
    diagonal = cand.reshape(n_splits * n_splits, n_classes)[:: n_splits + 1]  # cand[c, c]: a view
    dev = np.empty_like(cand)
    mean = np.empty((n_splits, 1, n_classes) if fold_axis else (1, n_splits, n_classes))
    std = np.empty((n_splits, n_classes))
    evals = np.empty(n_splits)
    samples = [0] * n_splits  # np.sum(per_fold[i]): integer-valued, exact
    group_samples = counts.sum(axis=1).astype(np.int64).tolist()
    fold = np.empty(len(counts), dtype=np.int64)
    for group in order.tolist():
        group_counts = counts[group]
        np.add(per_fold, group_counts, out=joined)
        np.true_divide(joined, y_cnt, out=joined_frac)
        diagonal[...] = joined_frac
        np.add.reduce(cand, axis=fold_axis, keepdims=True, out=mean)
        np.true_divide(mean, folds_div, out=mean)
        np.subtract(cand, mean, out=dev)
        np.square(dev, out=dev)
        np.add.reduce(dev, axis=fold_axis, out=std)
        np.true_divide(std, folds_div, out=std)
        np.sqrt(std, out=std)
        np.add.reduce(std, axis=1, out=evals)
        np.true_divide(evals, classes_div, out=evals)
        best = _scan(evals.tolist(), samples)
        fold[group] = best
        per_fold[best] = joined[best]
        if fold_axis:  # fold best's new fractions, for every candidate
            cand[:, best] = joined_frac[best]
        else:
            cand[best] = joined_frac[best]
        samples[best] += group_samples[group]
    return fold


def _scan(evals: list[float], samples: list[int]) -> int:
    """sklearn's sequential choice over folds ``0..n-1``: fold ``i`` replaces the best so far when ``evals[i] <
    min_eval`` or ``np.isclose(evals[i], min_eval)`` (``|a - b| <= 1e-08 + 1e-05 * |b|``) with fewer samples.
    ``evals`` are finite, so fold 0 is always taken first (``< inf``) and ``isclose`` needs no inf/equality case.
    """
    best, min_eval, min_samples = 0, evals[0], samples[0]
    for i in range(1, len(evals)):
        value = evals[i]
        if value < min_eval or (samples[i] < min_samples and abs(value - min_eval) <= 1e-08 + 1e-05 * abs(min_eval)):
            best, min_eval, min_samples = i, value, samples[i]
    return best


def _fill_empty_folds(fold_of: dict[str, int], size: dict[str, int], n_folds: int) -> dict[str, int]:
    fold_of = dict(fold_of)
    while True:
        members: dict[int, list[str]] = {k: [] for k in range(n_folds)}
        for s, k in sorted(fold_of.items()):
            members[k].append(s)
        empty = [k for k, m in members.items() if not m]
        if not empty:
            return fold_of
        donor = max(members, key=lambda k: (len(members[k]), -k))
        moved = min(members[donor], key=lambda s: (size[s], s))
        fold_of[moved] = empty[0]


def load_fold_file(path: Path, df: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """A copy of ``df`` with folds from a CSV ``subject,fold`` (0-based folds, one row per subject).

    Checks, each failing with :class:`ManifestError` naming the file and the offending rows (line numbers
    count the header as line 1): the two columns exist; folds are integers in ``0..n_folds-1`` (a file using
    exactly ``1..n_folds`` gets a message saying folds are 0-based and how to fix it); no subject twice; every
    labelled subject present; every fold holds at least one labelled subject; at least 2 classes (see
    :func:`require_classes`). Subjects absent from ``df`` are ignored. Warns about classes smaller than
    ``n_folds`` (:func:`warn_small_classes`).
    """
    require_classes(df)
    path = Path(path)
    table = read_small_csv(path, "fold file")
    if not {"subject", "fold"} <= set(table.columns):
        raise ManifestError(f"{path}: fold file needs columns 'subject,fold'; found: {', '.join(table.columns)}")
    table = table[["subject", "fold"]].apply(lambda s: s.str.strip())
    table["line"] = np.arange(len(table)) + 2

    def rows(mask: pd.Series, limit: int = 8) -> str:
        bad = table[mask]
        text = "; ".join(f"line {r.line}: {r.subject},{r.fold}" for r in bad.head(limit).itertuples())
        return text + (f"; ... {len(bad) - limit} more" if len(bad) > limit else "")

    numeric = pd.to_numeric(table["fold"], errors="coerce")
    not_int = numeric.isna() | (numeric != numeric.round())
    if not_int.any():
        raise ManifestError(f"{path}: folds must be integers; bad rows: {rows(not_int)}")
    table["fold"] = numeric.astype(int)
    empty_subject = table["subject"] == ""
    if empty_subject.any():
        raise ManifestError(f"{path}: empty subject; bad rows: {rows(empty_subject)}")
    values = set(table["fold"])
    if values == set(range(1, n_folds + 1)):
        raise ManifestError(
            f"{path}: folds are 0-based (0..{n_folds - 1}) but this file uses 1..{n_folds}. Subtract 1 from "
            f"every fold, e.g.: python -c \"import pandas as p; t=p.read_csv('{path}'); t['fold']-=1; "
            f"t.to_csv('{path}', index=False)\""
        )
    out_of_range = (table["fold"] < 0) | (table["fold"] >= n_folds)
    if out_of_range.any():
        hint = " (counting from 1? folds are 0-based: subtract 1)" if 0 not in values else ""
        raise ManifestError(
            f"{path}: folds must lie in 0..{n_folds - 1} (0-based, {n_folds} folds){hint}; "
            f"bad rows: {rows(out_of_range)}"
        )
    dup = table["subject"].duplicated(keep=False)
    if dup.any():
        raise ManifestError(f"{path}: each subject may appear once; repeated: {rows(dup)}")
    fold_of = dict(zip(table["subject"], table["fold"], strict=True))
    mask = _labelled(df)
    labelled_subjects = sorted(df.loc[mask, "subject"].astype(str).unique())
    missing = [s for s in labelled_subjects if s not in fold_of]
    if missing:
        raise ManifestError(
            f"{path}: {len(missing)} labelled subjects have no fold: {', '.join(missing[:10])}"
            + (f" ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    used = {fold_of[s] for s in labelled_subjects}
    empty = [k for k in range(n_folds) if k not in used]
    if empty:
        raise ManifestError(
            f"{path}: folds {', '.join(map(str, empty))} hold no labelled subject of this manifest; every "
            f"fold 0..{n_folds - 1} needs at least one"
        )
    warn_small_classes(df, n_folds)
    out = df.copy()
    out["fold"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out.loc[mask, "fold"] = out.loc[mask, "subject"].astype(str).map(fold_of).astype("Int64")
    return out


def subject_folds(df: pd.DataFrame) -> pd.DataFrame:
    """``subject,fold`` for the labelled subjects of a manifest, sorted by subject: the fold-file format that
    :func:`load_fold_file` reads (write it with ``to_csv(index=False)``)."""
    lab = df[_labelled(df) & df["fold"].notna()]
    return lab[["subject", "fold"]].drop_duplicates().sort_values("subject", kind="stable").reset_index(drop=True)
