"""How many Ray workers a run may use: ``ray.workers`` capped at the CPUs that can actually run them.

Each worker (an actor) takes one CPU of Ray's and a process of several hundred MB, so asking for more workers
than CPUs only costs memory: ``ray.workers=10000`` once started Ray with 10000 CPUs and one actor per item. On a
local instance the cap is this machine's cores (the CPUs this process may run on, and a cgroup's CPU quota where
one is set); on a cluster (``ray.address``) it is the cluster's CPUs, when Ray says how many. A capped count is
noted once as a warning. Actor pools are sized by :func:`worker_count` (and never by the number of items).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

from pipeline.config import RayConfig

log = logging.getLogger(__name__)

_noted: set[tuple[int, int]] = set()


def local_cores() -> int:
    """CPUs this process may use: its CPU affinity (``os.cpu_count()`` where the system has none), lowered to
    a cgroup v2 CPU quota (a container's ``--cpus``) when one is set; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cgroup_cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole CPUs of this cgroup's quota (``cpu.max``: "QUOTA PERIOD" in µs, rounded up), None for no quota."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        quota, period = path.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period))) if quota != "max" else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


def capped_workers(requested: int, available: int | None) -> int:
    """``requested`` workers, at most ``available`` (None: no cap known), at least 1."""
    return max(1, requested if available is None else min(requested, max(1, int(available))))


def cluster_cpus() -> int | None:
    """CPUs of the Ray instance this process is connected to, or None when Ray is not started or does not say."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        cpus = ray.cluster_resources().get("CPU")
    except Exception:  # noqa: BLE001 - a cluster that cannot say sets no cap
        return None
    return int(cpus) if cpus else None


def worker_count(cfg: RayConfig, requested: int | None = None) -> int:
    """Workers to start for ``requested`` (default ``cfg.workers``; e.g. ``cv.parallel``): at most this
    machine's cores (:func:`local_cores`) when Ray runs locally (no ``cfg.address``), and at most the CPUs of the
    Ray instance already started (local or cluster) where Ray says. A capped count is logged once as a warning.

    Call it after :func:`~pipeline.runtime.ray_start.ensure_ray` so that a cluster's CPUs are known; size an actor
    pool as ``min(worker_count(cfg), len(items))``."""
    requested = cfg.workers if requested is None else requested
    caps: list[tuple[int, str]] = []
    if not cfg.address:
        caps.append((local_cores(), "CPU cores of this machine"))
    cpus = cluster_cpus()
    if cpus is not None:
        caps.append((cpus, "CPUs of the Ray cluster" if cfg.address else "CPUs of the running Ray instance"))
    count = requested
    where = ""
    for available, what in caps:
        if capped_workers(count, available) < count:
            count, where = capped_workers(count, available), what
    if count < requested and (requested, count) not in _noted:
        _noted.add((requested, count))
        log.warning(f"{requested} workers asked for, but there are {count} {where}: using {count} workers")
    return count
