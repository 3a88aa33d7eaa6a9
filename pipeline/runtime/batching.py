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


def group_small(
    items: Sequence[T], is_small: Callable[[T], bool], n_workers: int, max_items: int, per_worker: int
) -> list[list[T]]:
    """``items`` cut into batches, in order: runs of small items (``is_small``) of at most :func:`batch_size`
    each, every other item a batch of its own (a long item's time limit or crash is then blamed on it alone).
    Concatenated, the batches are ``items`` in their order."""
    size = batch_size(sum(map(is_small, items)), n_workers, max_items, per_worker)
    batches: list[list[T]] = []
    current: list[T] = []
    for item in items:
        if not is_small(item):
            batches += [current, [item]] if current else [[item]]
            current = []
            continue
        current.append(item)
        if len(current) == size:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches
