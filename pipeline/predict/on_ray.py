"""Many inputs on Ray: one Predictor per actor, a chunk of inputs per call; a crash or time limit is one input's row.

Two passes. The first streams the chunks (:mod:`pipeline.predict.chunks`): two calls in flight per actor when every
input is a single image (an actor never waits for its next chunk), else one. A chunk of several inputs whose call
fails (its worker died, it ran past ``ray.item_timeout``, the call raised) is not blamed on all of them: its inputs
go to a second pass, one input per call and one call per actor, where a crash or a time limit is blamed on exactly
one input (the second pass starts its own actors, so it costs a few seconds, and only when something failed).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

from pipeline.model_folder.load import ModelBundle
from pipeline.predict.chunks import Todo, chunkable
from pipeline.predict.inputs import PredictInput
from pipeline.predict.prediction import PredictionResult
from pipeline.predict.predictor import Predictor
from pipeline.predict.rows import PredictOptions, predict_rows
from pipeline.runtime.failures import ItemTimeout, NoWorkers, describe_failure
from pipeline.runtime.workers import worker_count
from stages.errors import StageError
from stages.record import SequenceStatus


class ModelUnusable(StageError):
    """The model's networks do not load in a worker (weights that do not fit their network, e.g. from another
    seqfer version): the driver, which reads only the checkpoints' headers, ends the run with this one error."""


SINGLE_TRIES = 3
"""Tries of an input whose worker dies under it, in the one-input-per-call pass."""


class PredictWorker:
    """A Ray actor: loads the model once, predicts chunks of inputs."""

    def __init__(self, model_path: str, overrides: list[str], cache_dir: str | None, opts: PredictOptions) -> None:
        import cv2
        import torch

        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        self.predictor: Predictor | None = None
        self.unusable = ""  # why the model does not load: said by every call, not as a start-up traceback
        with warnings.catch_warnings():  # the driver has said it once; not again from every worker
            warnings.filterwarnings("ignore", message="prediction preprocessing differs from training")
            try:
                self.predictor = Predictor.load(model_path, overrides, cache_dir=cache_dir)
            except StageError as exc:
                self.unusable = str(exc)
        self.opts = opts

    def predict(self, chunk: list[tuple[PredictInput, str]]) -> list[dict]:
        """The result rows of ``chunk`` (input, side-file stem), in order (see
        :func:`~pipeline.predict.rows.predict_rows`); :class:`ModelUnusable` when the model did not load."""
        if self.predictor is None:
            raise ModelUnusable(self.unusable)
        return predict_rows(self.predictor, chunk, self.opts)


def error_row(pin: PredictInput, classes: list[str], reason: str) -> dict:
    """The result row of an input whose prediction failed outside the Predictor (status ``error``)."""
    return PredictionResult(pin.name, SequenceStatus.ERROR, reason, true_label=pin.true_label).row(classes)


def failure_row(pin: PredictInput, classes: list[str], exc: BaseException) -> dict:
    """The row of an input whose call failed: ``timeout`` past ``ray.item_timeout``, else ``error`` with why."""
    import ray

    if isinstance(exc, ItemTimeout):
        return PredictionResult(pin.name, SequenceStatus.TIMEOUT, str(exc), true_label=pin.true_label).row(classes)
    if isinstance(exc, ray.exceptions.RayActorError):
        return error_row(pin, classes, f"worker died on this input: {type(exc).__name__}")
    return error_row(pin, classes, describe_failure(exc).reason)  # the first and last line never cut


def _stream(
    bundle: ModelBundle,
    overrides: list[str],
    cache_dir: str | None,
    opts: PredictOptions,
    chunks: list[list[Todo]],
    per_actor: int,
    max_tries: int,
) -> Iterator[tuple[list[Todo], object]]:
    """(chunk, its rows or the exception its call ended with) for every chunk, as calls finish."""
    import ray

    from pipeline.runtime.ray_pool import stream_to_actors
    from pipeline.runtime.ray_start import landmark_worker_options

    ray_cfg = bundle.config.ray
    worker_cls = ray.remote(**landmark_worker_options(ray_cfg))(PredictWorker)

    def start() -> object:
        return worker_cls.remote(str(bundle.path), overrides, cache_dir, opts)

    yield from stream_to_actors(
        start,
        min(worker_count(ray_cfg), len(chunks)),
        chunks,
        lambda actor, chunk: actor.predict.remote([(pin, name) for pin, name, _key in chunk]),
        per_actor=per_actor,
        item_timeout=ray_cfg.item_timeout,
        max_tries=max_tries,
        start_timeout=ray_cfg.start_timeout,
    )


def run_on_ray(
    bundle: ModelBundle,
    overrides: list[str],
    cache_dir: str | None,
    opts: PredictOptions,
    chunks: list[list[Todo]],
) -> Iterator[list[tuple[str, dict]]]:
    """Predict ``chunks`` on ``ray.workers`` actors (see the module doc); yields each finished chunk's (resume key,
    row) pairs as it comes. A worker that dies (segfault, out of memory) is replaced; the batch goes on."""
    import ray

    from pipeline.runtime.ray_start import ensure_ray

    ensure_ray(bundle.config.ray)
    # two calls in flight per actor only when every input is a quick one: a queued video's time limit would count
    # the time it waited behind another
    per_actor = 2 if all(chunkable(pin, opts) for chunk in chunks for pin, _name, _key in chunk) else 1
    single: list[list[Todo]] = []  # inputs of failed chunks, and of single inputs whose worker died: one per call
    unusable = ""
    for chunk, rows in _stream(bundle, overrides, cache_dir, opts, chunks, per_actor=per_actor, max_tries=1):
        if unusable or isinstance(rows, ModelUnusable):  # Ray's error for a call is also an instance of its cause
            # every call fails at once from now on; each is collected (Ray reports an uncollected one at exit)
            unusable = unusable or str(getattr(rows, "cause", rows))
            continue
        if not isinstance(rows, BaseException):
            yield [(key, row) for (_pin, _name, key), row in zip(chunk, rows, strict=True)]
        elif not isinstance(rows, NoWorkers) and (len(chunk) > 1 or isinstance(rows, ray.exceptions.RayActorError)):
            single += [[item] for item in chunk]
        else:
            yield [(key, failure_row(pin, bundle.classes, rows)) for pin, _name, key in chunk]
    if unusable:
        raise ModelUnusable(unusable)
    if single:
        for chunk, rows in _stream(bundle, overrides, cache_dir, opts, single, per_actor=1, max_tries=SINGLE_TRIES):
            ((pin, _name, key),) = chunk
            yield [(key, failure_row(pin, bundle.classes, rows) if isinstance(rows, BaseException) else rows[0])]
