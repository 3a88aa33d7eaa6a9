"""A batch's inputs grouped into chunks, the unit of work a worker predicts (and the journal records) at once."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.predict.inputs import PredictInput
from pipeline.predict.rows import PredictOptions
from pipeline.runtime.batching import batch_size, group_small

Todo = tuple[PredictInput, str, str]
"""An input still to predict: (input, side-file stem, resume key)."""

CHUNK_MAX = 32
"""Most inputs in one chunk. 32 single 48 px images are ~0.5 s of a worker's time: the per-call costs (a Ray call,
a journal write, the network call's set-up) are spread thin, and a killed run loses at most a chunk per call in
flight."""

CHUNKS_PER_WORKER = 4
"""Smaller chunks for small batches: at least this many chunks per worker, so that the workers finish together."""


def chunkable(pin: PredictInput, opts: PredictOptions) -> bool:
    """Whether ``pin`` shares a chunk: a single image (one frame, no video) or an input that cannot be read, in
    whole-input mode. Videos, frame folders and window mode go one input per chunk (their time is unbounded, and
    a time limit or a crash must be blamed on one input)."""
    if opts.window is not None:
        return False
    return pin.source is None or (pin.source.video_path is None and len(pin.source.frame_paths) == 1)


def chunk_size(n_chunkable: int, n_workers: int) -> int:
    """Inputs per chunk for ``n_chunkable`` :func:`chunkable` inputs over ``n_workers``: :data:`CHUNKS_PER_WORKER`
    chunks per worker at least, at most :data:`CHUNK_MAX` inputs each, at least one."""
    return batch_size(n_chunkable, n_workers, CHUNK_MAX, CHUNKS_PER_WORKER)


def make_chunks(todo: Sequence[Todo], n_workers: int, opts: PredictOptions) -> list[list[Todo]]:
    """``todo`` cut into chunks, in order: runs of :func:`chunkable` inputs of at most :func:`chunk_size` each,
    every other input a chunk of its own."""
    return group_small(todo, lambda item: chunkable(item[0], opts), n_workers, CHUNK_MAX, CHUNKS_PER_WORKER)
