"""Grouping many small work items into batches for Ray calls, in input order, so per-call costs are paid once."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def batch_size(n_small: int, n_workers: int, max_items: int, per_worker: int) -> int:
    """Items per batch for ``n_small`` batchable items over ``n_workers``: at least ``per_worker`` batches per
    worker (so the workers finish together), at most ``max_items`` items each, at least one."""
    return max(1, min(max_items, math.ceil(n_small / (per_worker * max(1, n_workers)))))


def group_by_weight(
    items: Sequence[T],
    weight: Callable[[T], int | None],
    n_workers: int,
    max_weight: int,
    per_worker: int,
    ramp: int = 0,
) -> list[list[T]]:
    """``items`` cut into batches, in order. Items with a ``weight`` (frames, say) are grouped in runs whose summed
    weight stays within a budget: :func:`batch_size` of all their weights (at least ``per_worker`` batches per
    worker, at most ``max_weight`` each). ``ramp`` > 0: the first batches get the budget halved ``ramp`` times,
    then ``ramp - 1`` times, ... (so the first results come back early). An item of weight None, or heavier than
    the budget, is a batch of its own (a long item's time limit or crash is then blamed on it alone).
    Concatenated, the batches are ``items`` in their order."""
    weights = [weight(item) for item in items]
    full = batch_size(sum(w for w in weights if w is not None), n_workers, max_weight, per_worker)
    batches: list[list[T]] = []
    current: list[T] = []
    total = 0

    def budget() -> int:
        return max(1, full >> max(0, ramp - len(batches)))

    for item, w in zip(items, weights, strict=True):
        if w is None or w > full:
            batches += [current, [item]] if current else [[item]]
            current, total = [], 0
            continue
        if current and total + w > budget():
            batches.append(current)
            current, total = [], 0
        current.append(item)
        total += w
    if current:
        batches.append(current)
    return batches


def group_small(
    items: Sequence[T], is_small: Callable[[T], bool], n_workers: int, max_items: int, per_worker: int
) -> list[list[T]]:
    """:func:`group_by_weight` where every small item (``is_small``) weighs 1 and every other goes alone: runs of
    small items of at most :func:`batch_size` items each."""
    return group_by_weight(items, lambda item: 1 if is_small(item) else None, n_workers, max_items, per_worker)
