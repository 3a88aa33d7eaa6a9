"""Many inputs on Ray: one Predictor per actor, one input in flight each, a crash or timeout is that input's row."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.model_folder.load import ModelBundle
from pipeline.predict.inputs import PredictInput
from pipeline.predict.predictor import PredictionResult, Predictor
from pipeline.predict.rows import PredictOptions, predict_row
from stages.record import SequenceStatus


class PredictWorker:
    """A Ray actor: loads the model once, predicts inputs one by one."""

    def __init__(self, model_path: str, overrides: list[str], cache_dir: str | None, opts: PredictOptions) -> None:
        import cv2
        import torch

        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        self.predictor = Predictor.load(model_path, overrides, cache_dir=cache_dir)
        self.opts = opts

    def predict(self, pin: PredictInput, out_name: str) -> dict:
        """``pin``'s result row (see :func:`~pipeline.predict.rows.predict_row`)."""
        return predict_row(self.predictor, pin, out_name, self.opts)


def error_row(pin: PredictInput, classes: list[str], reason: str) -> dict:
    """The result row of an input whose prediction failed outside the Predictor (status ``error``)."""
    return PredictionResult(pin.name, SequenceStatus.ERROR, reason, true_label=pin.true_label).row(classes)


def run_on_ray(
    bundle: ModelBundle,
    overrides: list[str],
    cache_dir: str | None,
    opts: PredictOptions,
    todo: list[tuple[PredictInput, str, str]],
) -> Iterator[tuple[str, dict]]:
    """Stream ``todo`` (input, side-file stem, resume key) through ``ray.workers`` actors, one call in flight per
    actor (so a crash is blamed on exactly one input); yields (key, row) as they finish. A worker that dies
    (segfault, out of memory) gives its input an ``error`` row and is replaced; the batch goes on."""
    import ray

    from pipeline.runtime.ray_pool import ItemTimeout, ensure_ray, landmark_worker_options, stream_to_actors

    ensure_ray(bundle.config.ray)
    worker_cls = ray.remote(**landmark_worker_options(bundle.config.ray))(PredictWorker)

    def start() -> object:
        return worker_cls.remote(str(bundle.path), overrides, cache_dir, opts)

    ray_cfg = bundle.config.ray
    stream = stream_to_actors(
        start,
        min(ray_cfg.workers, len(todo)),
        todo,
        lambda actor, t: actor.predict.remote(t[0], t[1]),
        per_actor=1,
        item_timeout=ray_cfg.item_timeout,
        start_timeout=ray_cfg.start_timeout,
    )
    for (pin, _name, key), row in stream:
        if isinstance(row, ItemTimeout):
            row = PredictionResult(pin.name, SequenceStatus.TIMEOUT, str(row), true_label=pin.true_label).row(
                bundle.classes
            )
        elif isinstance(row, ray.exceptions.RayActorError):
            row = error_row(pin, bundle.classes, f"worker died on this input: {type(row).__name__}")
        elif isinstance(row, BaseException):
            row = error_row(pin, bundle.classes, f"{type(row).__name__}: {str(row)[:300]}")
        yield key, row
