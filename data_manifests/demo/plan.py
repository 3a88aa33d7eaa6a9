"""Which subject shows which expression: the list of sequences a demo set holds.

CK+-like plans scale CK+'s 327 labelled sequences (anger 45, contempt 18, disgust 59, fear 25, happy 69,
sadness 28, surprise 83 over 118 subjects) to the requested size by largest remainders, keep every class when
there are at least 7 sequences, give every subject at least one sequence and never the same class twice, and add
~10% unlabelled sequences (no Emotion file, as in the real release) where the layout has them. Oulu plans give
every subject all 6 basic classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_manifests.schema import CLASS_SETS

CKPLUS_COUNTS: dict[str, int] = {
    "anger": 45,
    "contempt": 18,
    "disgust": 59,
    "fear": 25,
    "happy": 69,
    "sadness": 28,
    "surprise": 83,
}
CKPLUS_SUBJECTS = 118
CKPLUS_LABELLED = sum(CKPLUS_COUNTS.values())  # 327
EXTRA_UNLABELLED = 0.1


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence to generate. ``index`` (0-based, in plan order) seeds its randomness; ``label`` is a
    canonical class name or None (unlabelled); ``number`` is the 1-based sequence number within the subject."""

    index: int
    subject_index: int
    subject: str
    number: int
    label: str | None


def default_sequences(n_subjects: int) -> int:
    """CK+-proportional number of labelled sequences for ``n_subjects`` (at least one per subject)."""
    return max(round(CKPLUS_LABELLED * n_subjects / CKPLUS_SUBJECTS), n_subjects)


def class_counts(n: int, n_subjects: int) -> dict[str, int]:
    """Split ``n`` labelled sequences over the CK+ classes in CK+ proportions (largest remainder); every class
    gets one when n >= 7; no class more than ``n_subjects`` (a subject shows each class at most once)."""
    classes = CLASS_SETS["ckplus7"]
    if n > len(classes) * n_subjects:
        raise ValueError(
            f"{n} sequences cannot fit {n_subjects} subjects with distinct classes "
            f"(at most {len(classes) * n_subjects})"
        )
    share = np.array([CKPLUS_COUNTS[c] for c in classes], dtype=np.float64) * n / CKPLUS_LABELLED
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(classes):
        for i in np.flatnonzero(counts == 0):
            counts[i] += 1
            counts[int(np.argmax(counts))] -= 1
    while (counts > n_subjects).any():
        i = int(np.argmax(counts))
        counts[i] -= 1
        room = np.flatnonzero(counts < n_subjects)
        counts[room[np.argmin(counts[room])]] += 1
    return dict(zip(classes, (int(c) for c in counts), strict=True))


def subject_ids(n_subjects: int, rng: np.random.Generator, prefix: str, contiguous: bool) -> list[str]:
    """Sorted subject ids: ``P001..`` when contiguous (Oulu), else CK+-like gappy ``S005, S010, ...``."""
    if contiguous:
        return [f"{prefix}{i + 1:03d}" for i in range(n_subjects)]
    pool = np.arange(5, max(1000, 5 + 3 * n_subjects))
    picked = np.sort(rng.choice(pool, size=n_subjects, replace=False))
    return [f"{prefix}{i:03d}" for i in picked]


def ckplus_plan(
    n_subjects: int, n_labelled: int, rng: np.random.Generator, extra_fraction: float = EXTRA_UNLABELLED
) -> list[SequenceSpec]:
    """CK+-like plan (see module doc); ``extra_fraction`` of unlabelled sequences on top (at least one when
    > 0)."""
    if n_subjects < 1:
        raise ValueError("n_subjects must be >= 1")
    if n_labelled < n_subjects:
        raise ValueError(f"n_sequences ({n_labelled}) must be at least n_subjects ({n_subjects})")
    counts = class_counts(n_labelled, n_subjects)
    owned: list[list[str | None]] = [[] for _ in range(n_subjects)]
    tiebreak = rng.permutation(n_subjects)
    for cls in sorted(counts, key=lambda c: (-counts[c], c)):
        free = [s for s in range(n_subjects) if cls not in owned[s]]
        free.sort(key=lambda s: (len(owned[s]), tiebreak[s]))
        for s in free[: counts[cls]]:
            owned[s].append(cls)
    n_extra = max(1, round(extra_fraction * n_labelled)) if extra_fraction > 0 else 0
    for s in rng.choice(n_subjects, size=n_extra, replace=True):
        owned[int(s)].append(None)
    ids = subject_ids(n_subjects, rng, "S", contiguous=False)
    specs = []
    for s in range(n_subjects):
        order = rng.permutation(len(owned[s]))
        for number, k in enumerate(order, start=1):
            specs.append(SequenceSpec(len(specs), s, ids[s], number, owned[s][k]))
    return specs


def oulu_plan(n_subjects: int, rng: np.random.Generator) -> list[SequenceSpec]:
    """Every subject shows all 6 basic classes, in class order (numbers 1..6)."""
    ids = subject_ids(n_subjects, rng, "P", contiguous=True)
    specs = []
    for s in range(n_subjects):
        for number, cls in enumerate(CLASS_SETS["basic6"], start=1):
            specs.append(SequenceSpec(len(specs), s, ids[s], number, cls))
    return specs
