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
    actors: list[Any],
    items: Iterable[Any],
    submit: Callable[[Any, Any], Any],
    per_actor: int = 2,
) -> Iterator[tuple[Any, Any]]:
    """Feed ``items`` to ``actors`` with at most ``per_actor`` calls in flight each; yield (item, result) as
    results arrive. Memory is bounded by the calls in flight, not by the number of items.

    ``submit(actor, item)`` returns an ObjectRef. Results come in completion order; callers that need a fixed
    order sort by item.
    """
    import ray

    free = [a for a in actors for _ in range(per_actor)]
    in_flight: dict[Any, tuple[Any, Any]] = {}
    iterator = iter(items)
    exhausted = False
    while True:
        while free and not exhausted:
            try:
                item = next(iterator)
            except StopIteration:
                exhausted = True
                break
            actor = free.pop()
            in_flight[submit(actor, item)] = (actor, item)
        if not in_flight:
            return
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            actor, item = in_flight.pop(ref)
            free.append(actor)
            yield item, ray.get(ref)
