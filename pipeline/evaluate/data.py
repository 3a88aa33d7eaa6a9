"""The dataset an evaluation scores: scanned without folds, one split kept, its classes matched to the model's."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from data_manifests.errors import ManifestError
from data_manifests.scan import ScanReport, scan
from data_manifests.scan_common import CANONICAL_CLASSES, canonical_class

SPLIT_COLUMN = "split"


@dataclass
class EvalData:
    """What an evaluation scores and what it leaves out.

    ``rows``: manifest rows to predict and score (labelled, of a class the model has; ``label`` spelled as the
    model spells it), in scan order. ``scored_classes``: the model's classes that occur in ``rows``, in the
    model's order. ``excluded``: class -> count of labelled sequences of a class the model lacks (not predicted).
    ``unlabelled``: reason -> count of sequences without a usable label (not predicted). ``n_sequences``: every
    sequence of the scan (after the split filter).
    """

    rows: pd.DataFrame
    scored_classes: list[str]
    excluded: dict[str, int] = field(default_factory=dict)
    unlabelled: dict[str, int] = field(default_factory=dict)
    n_sequences: int = 0

    @property
    def n_unlabelled(self) -> int:
        return sum(self.unlabelled.values())


def scan_dataset(
    root: Path,
    fmt: str,
    *,
    classes: str | list[str] | None = None,
    name_pattern: str | None = None,
    **options: object,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan ``root`` with the ``fmt`` scanner (:func:`data_manifests.scan.scan`: no folds, so any number of
    subjects). ``classes`` None reads every canonical class, so that a class the model lacks is counted as
    excluded rather than hidden among the unlabelled; ``name_pattern`` None keeps the scanner's default;
    ``options`` are the other scanner options (``labels_csv``, ``include_neutral``, ``oulu_system``...)."""
    extra = {"name_pattern": name_pattern} if name_pattern is not None else {}
    return scan(Path(root), fmt, classes=list(CANONICAL_CLASSES) if classes is None else classes, **options, **extra)


def select_split(df: pd.DataFrame, split: str | None, where: str) -> pd.DataFrame:
    """The rows of ``split`` when the dataset carries its own split (a non-null ``split`` column); every row
    when ``split`` is None. :class:`ManifestError` naming ``where`` when ``split`` is given but the dataset has
    no split, or when no row belongs to it (the message lists the splits there are)."""
    has_split = SPLIT_COLUMN in df.columns and bool(df[SPLIT_COLUMN].notna().any())
    if split is None:
        return df
    if not has_split:
        raise ManifestError(f"--split {split}: {where} has no split of its own; leave --split out to score all of it")
    keep = df[SPLIT_COLUMN] == split
    if not keep.any():
        there = sorted(str(s) for s in df[SPLIT_COLUMN].dropna().unique())
        raise ManifestError(f"--split {split}: {where} has no sequence in that split; its splits: {', '.join(there)}")
    return df[keep].reset_index(drop=True)


def _reason(note: object) -> str:
    """A label note's group (its text before the first ':'), as the scan report groups them."""
    return "no reason given" if note is None or note != note else str(note).split(":", 1)[0]


def match_classes(df: pd.DataFrame, model_classes: list[str], where: str) -> EvalData:
    """Split the scanned rows into those to score, the excluded classes and the unlabelled ones (see
    :class:`EvalData`). Class names are compared through :func:`~data_manifests.scan_common.canonical_class`
    (``angry`` = anger, ``sad`` = sadness, ...) on both sides. :class:`ManifestError` naming ``where`` when no
    sequence is left to score."""
    model_of = {canonical_class(c) or c: c for c in model_classes}
    labelled = df[df["labelled"]]
    unlabelled = Counter(_reason(n) for n in df.loc[~df["labelled"], "label_note"])
    canon = [canonical_class(str(v)) or str(v) for v in labelled["label"]]
    known = [c in model_of for c in canon]
    excluded = Counter(c for c, k in zip(canon, known, strict=True) if not k)
    rows = labelled[known].copy()
    rows["label"] = [model_of[c] for c, k in zip(canon, known, strict=True) if k]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        data_classes = sorted(set(canon))
        raise ManifestError(
            f"{where}: nothing to score: no labelled sequence of a class the model knows "
            f"({', '.join(model_classes)}); labelled classes there: {', '.join(data_classes) or 'none'}"
            + (f"; unlabelled sequences: {sum(unlabelled.values())}" if unlabelled else "")
        )
    present = set(rows["label"])
    return EvalData(
        rows=rows,
        scored_classes=[c for c in model_classes if c in present],
        excluded=dict(sorted(excluded.items())),
        unlabelled=dict(sorted(unlabelled.items())),
        n_sequences=len(df),
    )
