"""Ray start-up and the one streaming-dispatch loop every parallel verb uses.

Local Ray is the embedded default (``ray.workers`` CPUs); ``ray.address`` joins an existing cluster with no code
change (the cache and output folders must then be on storage every node sees).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config import RayConfig

_REPO_ROOT = str(Path(__file__).resolve().parent.parent)


def ensure_ray(cfg: RayConfig) -> None:
    """Start local Ray (or connect to ``cfg.address``) unless a session is already up (tests share one)."""
    import ray

    if ray.is_initialized():
        return
    # Workers of a local cluster inherit this environment: make the project importable from a plain checkout,
    # and keep each worker to one BLAS/OpenCV thread (parallelism comes from the workers).
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _REPO_ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([_REPO_ROOT, *paths])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "ignore_reinit_error": True,
        "log_to_driver": True,
        "configure_logging": False,
    }
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.workers, **kwargs)


def stream_to_actors(
    make_actor: Callable[[], Any],
    n_actors: int,
    items: Iterable[Any],
    submit: Callable[[Any, Any], Any],
    per_actor: int = 2,
) -> Iterator[tuple[Any, Any]]:
    """Feed ``items`` to ``n_actors`` actors built by ``make_actor()``, at most ``per_actor`` calls in flight
    each; yield (item, result) as results arrive. Memory is bounded by the calls in flight, not by the number
    of items. One bad item never ends the batch: a call that raises yields (item, the exception), and an actor
    that dies (segfault, out of memory) is replaced, each of its in-flight items yielding the error. With
    ``per_actor=1`` a crash is blamed on exactly one item. The actors are killed at the end.

    ``submit(actor, item)`` returns an ObjectRef. Results come in completion order; callers that need a fixed
    order sort by item.
    """
    import ray

    actors = [make_actor() for _ in range(n_actors)]
    free = [slot for slot in range(n_actors) for _ in range(per_actor)]
    in_flight: dict[Any, tuple[int, Any, Any]] = {}
    iterator = iter(items)
    exhausted = False
    try:
        while True:
            while free and not exhausted:
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                slot = free.pop()
                in_flight[submit(actors[slot], item)] = (slot, actors[slot], item)
            if not in_flight:
                return
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                slot, actor, item = in_flight.pop(ref)
                free.append(slot)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    if actors[slot] is actor:  # replace a dead actor once, whatever it had in flight
                        ray.kill(actor)
                        actors[slot] = make_actor()
                    result = exc
                except ray.exceptions.RayError as exc:
                    result = exc
                yield item, result
    finally:
        for actor in actors:
            ray.kill(actor)
