"""Ray start-up: a local instance of our own (the embedded default, ``ray.workers`` CPUs) or an existing cluster at
``ray.address`` with no code change (the cache and output folders must then be on storage every node sees); the
options of the landmark workers; a quicker stop at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import RayConfig
from pipeline.runtime.failures import failure_reason
from pipeline.runtime.workers import worker_count

log = logging.getLogger(__name__)

_REPO_ROOT = str(Path(__file__).resolve().parents[2])

# Ray (2.5x) logs this notice, a WARNING of the logger below, at every ray.init that starts a local instance now that
# token authentication is its default; it asks nothing of the user. RAY_AUTH_MODE=token would also silence it, but
# Ray caches its config when imported: set later (as ensure_ray would), the local instance fails to start.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


def ensure_ray(cfg: RayConfig) -> None:
    """Start a local Ray instance of our own (or connect to ``cfg.address``) unless a session is already up (tests
    share one).

    With no ``ray.address`` the instance is always a new local one (``address="local"``), whatever else runs on
    this machine (a user's own ``ray start`` cluster, a stale address file, ``RAY_ADDRESS``). A cluster at
    ``cfg.address`` that cannot be reached is a :class:`~stages.errors.StageError` naming the address.
    """
    import ray

    from stages.errors import StageError

    if ray.is_initialized():
        return
    # Workers of a local cluster inherit this environment: make the project importable from a plain checkout,
    # and keep each worker to one BLAS/OpenCV thread (parallelism comes from the workers).
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _REPO_ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([_REPO_ROOT, *paths])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if cfg.huge_pages and not cfg.address:  # see landmark_worker_options
        os.environ["GLIBC_TUNABLES"] = huge_pages_tunables()
    if not cfg.address:
        os.environ.update(quick_connect_retries(os.environ))
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "ignore_reinit_error": True,
        "log_to_driver": True,
        "configure_logging": False,
    }
    if cfg.address:
        _check_reachable(cfg.address)
        try:
            with _ray_auth_notice_to_debug():
                ray.init(address=cfg.address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError, a plain Exception...
            raise StageError(
                f"ray.address {cfg.address!r}: cannot connect to a Ray cluster there "
                f"({failure_reason(exc)}); "
                "start it with `ray start --head`, or drop ray.address to run locally"
            ) from None
    else:
        _start_local(ray, worker_count(cfg), kwargs)


def _start_local(ray: Any, num_cpus: int, kwargs: dict[str, Any]) -> None:
    """``ray.init`` of a new local instance with ``num_cpus`` CPUs; a failure to start (too little memory under a
    ``ulimit -v`` or a container limit, no room in the temp folder, its raylet or GCS dying) is a
    :class:`~stages.errors.StageError` saying what to check, not a traceback."""
    from stages.errors import StageError

    try:
        with _ray_auth_notice_to_debug():
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        # exit handlers run last-registered first, and Ray registered its shutdown when imported; once per process
        atexit.unregister(stop_local_ray)
        atexit.register(stop_local_ray)
    except Exception as exc:  # noqa: BLE001 - RuntimeError, ConnectionError, OSError, MemoryError, and a plain
        # Exception("The current node timed out during startup...") when its raylet dies (as under ulimit -v)
        if ray.is_initialized():  # half started: stop what did start
            ray.shutdown()
        raise StageError(
            f"Ray could not start its local instance ({failure_reason(exc)}); it needs about 1 GB of memory and "
            f"free space in its temp folder ({_ray_temp_dir()}): check the memory limits (ulimit -v, a container "
            "or batch-job limit) and the free disk space, or lower ray.workers"
        ) from None


def stop_local_ray() -> None:
    """Stop the local Ray instance this process started; at exit, before Ray's own exit handler. Two things that
    handler does cost a local command ~1.5 s for nothing:

    - it stops the GCS before the autoscaler monitor, whose SIGTERM handler then tries to report its end to the
      stopped GCS until Ray's 1 s grace runs out (1.0 of its 1.35 s, Ray 2.60). So the monitor is killed first: a
      local instance has nothing to autoscale, so nothing is lost;
    - as an exit handler (``_exiting_interpreter``) it first sleeps 0.5 s "to make sure that log messages finish
      printing". Called from here, ``ray.shutdown()`` stops the same processes without that pause (Ray's handler
      then finds nothing to stop). Every result of a seqfer command comes back through its calls' return values
      and is written before exit; what the pause could still show is a worker's last log line.

    Does nothing when no such instance runs; if Ray's internals differ, Ray's own handler does the shutdown."""
    try:
        import ray
        from ray._private import ray_constants

        node = ray._private.worker._global_node
        if node is None or not node.head:
            return
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=5)
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - whatever happens, Ray's own shutdown follows
        log.debug("ray: the local instance was left to Ray's shutdown (%s)", exc)


def _ray_temp_dir() -> str:
    """Where a local Ray keeps its session files: ``RAY_TMPDIR``, else the system's temp folder."""
    import tempfile

    return os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()


class _AuthNoticeFilter(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice from its logger, passing it on to ours at DEBUG
    (``seqfer -v`` shows it); every other record of that logger goes through unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage().startswith(_RAY_AUTH_NOTICE):
            log.debug("ray: %s", record.getMessage())
            return False
        return True


@contextmanager
def _ray_auth_notice_to_debug() -> Iterator[None]:
    """For the duration of a ``ray.init``: Ray's token-authentication notice goes to DEBUG, not the terminal."""
    ray_logger = logging.getLogger(_RAY_AUTH_LOGGER)
    notice_filter = _AuthNoticeFilter()
    ray_logger.addFilter(notice_filter)
    try:
        yield
    finally:
        ray_logger.removeFilter(notice_filter)


CONNECT_INTERVAL_KEY = "RAY_raylet_client_connect_timeout_milliseconds"
CONNECT_ATTEMPTS_KEY = "RAY_raylet_client_num_connect_attempts"
CONNECT_INTERVAL_MS = 100
CONNECT_ATTEMPTS = 100


def quick_connect_retries(environ: Mapping[str, str]) -> dict[str, str]:
    """The Ray settings (environment variables, read by each Ray process as it starts) with which a local
    instance's processes retry a socket that is not listening yet every 100 ms, 100 times, instead of every
    second, 10 times: the same 10 s before they give up.

    Why: in 5 of 12 ``ray.init`` calls on the 2-core machines, the raylet's log showed exactly 1.00 s between the
    start of its object store and its next step (the store's socket was not ready at its first try); with these
    settings that wait is 0.1 s at most, and ``ray.init`` took 2.62 s on average against 3.02 s
    (``benchmarks/bench_ray_start.py``; BENCHMARKS.md, "Ray's own start"). Empty (nothing changed) when the user
    set either variable."""
    if CONNECT_INTERVAL_KEY in environ or CONNECT_ATTEMPTS_KEY in environ:
        return {}
    return {CONNECT_INTERVAL_KEY: str(CONNECT_INTERVAL_MS), CONNECT_ATTEMPTS_KEY: str(CONNECT_ATTEMPTS)}


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def huge_pages_tunables() -> str:
    """``GLIBC_TUNABLES`` with glibc's malloc on transparent huge pages, keeping any tunables of the user's own."""
    own = [
        t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.malloc.hugetlb=")
    ]
    return ":".join([*own, HUGE_PAGES_TUNABLE])


def landmark_worker_options(cfg: RayConfig) -> dict[str, Any]:
    """``ray.remote`` options for workers that run the landmark stages (preprocess, predict): one CPU each.

    With ``ray.huge_pages`` their malloc uses transparent huge pages: dlib's 68-point model is ~100 MB of trees
    read at random, and with 4 KiB pages most of those reads also miss the TLB. glibc reads the tunable when a
    process starts, so it has to be in the worker's environment: a local instance's workers inherit it from
    :func:`ensure_ray` (prestarted workers stay usable); on a cluster it travels as the actor's runtime_env
    (a dedicated worker process, about a second more to start)."""
    options: dict[str, Any] = {"num_cpus": 1}
    if cfg.huge_pages and cfg.address:
        options["runtime_env"] = {"env_vars": {"GLIBC_TUNABLES": huge_pages_tunables()}}
    return options


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise :class:`StageError` unless something listens at the cluster ``address`` (``auto`` reads Ray's
    address file): ``ray.init`` itself retries an unreachable address for minutes."""
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    from stages.errors import StageError

    if "://" in address:  # Ray Client (ray://host:port): ray.init reports its own connection errors
        return
    try:
        host_port = canonicalize_bootstrap_address(address)
    except Exception as exc:  # Ray raises ConnectionError, ValueError... for a missing or malformed address
        raise StageError(f"ray.address {address!r}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if host_port is None:
        return
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise StageError(
            f"ray.address {address!r}: no Ray cluster reachable at {host_port} ({exc}); start it with "
            "`ray start --head`, or drop ray.address to run on a local Ray of our own"
        ) from None
