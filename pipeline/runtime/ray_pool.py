"""Ray start-up and the one streaming-dispatch loop every parallel verb uses.

Local Ray is the embedded default (``ray.workers`` CPUs); ``ray.address`` joins an existing cluster with no code
change (the cache and output folders must then be on storage every node sees).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import RayConfig
from pipeline.runtime.failures import ItemTimeout, NoWorkers, failure_reason
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
        atexit.register(stop_monitor_first)  # runs before Ray's own shutdown, registered when ray was imported
    except Exception as exc:  # noqa: BLE001 - RuntimeError, ConnectionError, OSError, MemoryError, and a plain
        # Exception("The current node timed out during startup...") when its raylet dies (as under ulimit -v)
        if ray.is_initialized():  # half started: stop what did start
            ray.shutdown()
        raise StageError(
            f"Ray could not start its local instance ({failure_reason(exc)}); it needs about 1 GB of memory and "
            f"free space in its temp folder ({_ray_temp_dir()}): check the memory limits (ulimit -v, a container "
            "or batch-job limit) and the free disk space, or lower ray.workers"
        ) from None


def stop_monitor_first() -> None:
    """Kill the autoscaler monitor of the local Ray instance this process started; at exit, before Ray's own
    shutdown. That shutdown stops the GCS before the monitor, whose SIGTERM handler then tries to report its end to
    the stopped GCS until Ray's 1 s grace runs out: 1.0 of its 1.35 s (Ray 2.60), at the end of every command. A
    local instance has nothing to autoscale, so nothing is lost; Ray's shutdown then finds the monitor gone and
    stops the rest as before. Does nothing when no such instance runs or Ray's internals differ."""
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
    except Exception as exc:  # noqa: BLE001 - whatever happens, Ray's own shutdown follows
        log.debug("ray: the monitor was left to Ray's shutdown (%s)", exc)


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


class _ActorStream:
    """The state of one :func:`stream_to_actors` call: actor slots (started, starting, free), the calls in flight,
    the items waiting for a retry. Its methods are the loop's steps; each yields the (item, result) pairs its step
    settles."""

    def __init__(
        self,
        make_actor: Callable[[], Any],
        items: Iterable[Any],
        submit: Callable[[Any, Any], Any],
        per_actor: int,
        item_timeout: float | None,
        max_tries: int,
        start_timeout: float,
    ) -> None:
        import ray

        self.ray = ray
        self.make_actor, self.submit, self.per_actor = make_actor, submit, per_actor
        self.item_timeout, self.max_tries, self.start_timeout = item_timeout, max_tries, start_timeout
        self.actors: dict[int, Any] = {}  # slot -> started actor
        self.starting: dict[Any, tuple[int, Any, float]] = {}  # ready ref -> (slot, actor, started at)
        self.free: list[int] = []  # a slot once per call it may take
        self.in_flight: dict[Any, tuple[int, Any, Any, int, float]] = {}  # ref -> (slot, actor, item, tries, at)
        self.retry: deque[tuple[Any, int]] = deque()
        self.iterator = iter(items)
        self.exhausted = False
        self.failed_starts: list[str] = []

    def start(self, slot: int) -> None:
        """Start an actor for ``slot``; it gets work once its ``__ray_ready__`` call returns."""
        actor = self.make_actor()
        self.starting[actor.__ray_ready__.remote()] = (slot, actor, time.monotonic())

    def lose(self, slot: int, actor: Any, replace: bool) -> None:
        """Retire a dead or stopped actor: its slots leave ``free``; a replacement starts when ``replace``."""
        if self.actors.get(slot) is not actor:
            return
        del self.actors[slot]
        self.free[:] = [s for s in self.free if s != slot]
        self.ray.kill(actor, no_restart=True)
        if replace:
            self.start(slot)

    def next_item(self) -> tuple[Any, int] | None:
        """(item, tries so far): a retry first, else the next new item; None when there is none."""
        if self.retry:
            return self.retry.popleft()
        if self.exhausted:
            return None
        try:
            return next(self.iterator), 0
        except StopIteration:
            self.exhausted = True
            return None

    def fill(self) -> None:
        """Submit an item to every free slot while there are items."""
        while self.free:
            got = self.next_item()
            if got is None:
                break
            slot = self.free.pop()
            item, tries = got
            actor = self.actors[slot]
            self.in_flight[self.submit(actor, item)] = (slot, actor, item, tries + 1, time.monotonic())

    def finished(self) -> bool:
        """Every item has had its result."""
        return not self.in_flight and not self.retry and self.exhausted

    def stuck(self) -> bool:
        """Nothing runs and nothing can: no call in flight and no actor starting."""
        return not self.in_flight and not self.starting

    def fail_remaining(self) -> Iterator[tuple[Any, Any]]:
        """Each item still to do, with :class:`NoWorkers` naming why workers failed."""
        why = "; ".join(self.failed_starts[-3:]) or "the cluster has no free CPU for a worker"
        while (got := self.next_item()) is not None:
            yield got[0], NoWorkers(f"no Ray worker could be started or scheduled: {why}")

    def wait_seconds(self, polling: bool) -> float | None:
        """How long to wait for a result: until the next start or item deadline (None: none), at most 0.5 s
        when ``polling`` (a stop flag is watched)."""
        deadlines = [t0 + self.start_timeout for (_, _, t0) in self.starting.values()]
        if self.item_timeout is not None:
            deadlines += [t0 + self.item_timeout for (*_, t0) in self.in_flight.values()]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        if polling:
            wait_s = 0.5 if wait_s is None else min(wait_s, 0.5)
        return wait_s

    def collect(self, ref: Any) -> Iterator[tuple[Any, Any]]:
        """Settle a ready ref: an actor that started (or failed to), or a call's result (a dead actor's item is
        retried while it has tries left)."""
        ray = self.ray
        if ref in self.starting:
            slot, actor, _t0 = self.starting.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:  # its __init__ failed or its node went away
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]  # the last is the cause
                self.failed_starts.append(f"worker failed to start: {lines[-1] if lines else repr(exc)}")
                ray.kill(actor, no_restart=True)
                return
            self.actors[slot] = actor
            self.free.extend([slot] * self.per_actor)
            return
        slot, actor, item, tries, _t0 = self.in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self.lose(slot, actor, replace=True)  # replace a dead actor once, whatever it had in flight
            if tries < self.max_tries:
                self.retry.append((item, tries))
                return
            result = exc
        except Exception as exc:  # noqa: BLE001 - the call raised (RayTaskError) or its result cannot be read
            result = exc
        finally:
            self.give_back(slot, actor)  # whatever the call did, unless its actor is gone
        yield item, result

    def give_back(self, slot: int, actor: Any) -> None:
        """Return a finished call's place on ``actor`` to ``free`` (nothing when the actor was lost or replaced)."""
        if self.actors.get(slot) is actor:
            self.free.append(slot)

    def expire(self) -> Iterator[tuple[Any, Any]]:
        """Drop actors that did not start within ``start_timeout`` (the pool shrinks); stop the actor of each call
        running past ``item_timeout`` (replaced) and yield the item with :class:`ItemTimeout`."""
        now = time.monotonic()
        for ref, (_slot, actor, t0) in list(self.starting.items()):
            if now - t0 >= self.start_timeout:  # cannot be scheduled (or hangs starting)
                del self.starting[ref]
                self.failed_starts.append(f"a worker did not start within {self.start_timeout:.0f} s")
                self.ray.kill(actor, no_restart=True)
        if self.item_timeout is not None:
            for ref, (slot, actor, item, _tries, t0) in list(self.in_flight.items()):
                if now - t0 >= self.item_timeout:
                    del self.in_flight[ref]
                    self.lose(slot, actor, replace=True)
                    yield item, ItemTimeout(f"took longer than the {self.item_timeout:g} s time limit")

    def kill_all(self) -> None:
        """Stop every actor, started or starting."""
        for actor in [*self.actors.values(), *(a for _, a, _ in self.starting.values())]:
            self.ray.kill(actor, no_restart=True)


def stream_to_actors(
    make_actor: Callable[[], Any],
    n_actors: int,
    items: Iterable[Any],
    submit: Callable[[Any, Any], Any],
    per_actor: int = 2,
    item_timeout: float | None = None,
    max_tries: int = 3,
    start_timeout: float = 120.0,
    stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Feed ``items`` to up to ``n_actors`` actors built by ``make_actor()``, at most ``per_actor`` calls in
    flight each; yield (item, result) as results arrive. Memory is bounded by the calls in flight, not by the
    number of items. No item waits forever and one bad item never ends the batch:

    - a call that raises yields (item, the exception) and its place on the actor goes to the next item;
      :func:`~pipeline.runtime.failures.describe_failure` of the exception gives the item's one-line reason and
      whether the data or the environment (disk, memory, a lost worker: the run must exit non-zero) failed;
    - an actor that dies (segfault, out of memory, its node lost) is replaced and its in-flight items are retried
      on the actors that remain, each item at most ``max_tries`` times in all, after which it yields the
      ``RayActorError`` (with ``per_actor=1`` a crash is blamed on exactly one item);
    - an actor is given work only once it has started; one that cannot start or be scheduled within
      ``start_timeout`` seconds is dropped, so the pool shrinks to what the cluster can run; when no actor is
      left, each remaining item yields :class:`NoWorkers`;
    - an item running longer than ``item_timeout`` seconds (None: no limit) yields :class:`ItemTimeout`; its
      actor is killed and replaced (that actor's other in-flight items are retried);
    - when ``stop()`` turns true (checked at least twice a second) the stream ends at once: items in flight are
      dropped, the rest never start.

    The actors are killed at the end. ``submit(actor, item)`` returns an ObjectRef. Results come in completion
    order; callers that need a fixed order sort by item.
    """
    import ray

    stream = _ActorStream(make_actor, items, submit, per_actor, item_timeout, max_tries, start_timeout)
    for slot in range(max(1, n_actors)):
        stream.start(slot)
    try:
        while True:
            if stop is not None and stop():
                return
            stream.fill()
            if stream.finished():
                return
            if stream.stuck():  # fail what is left, never wait
                yield from stream.fail_remaining()
                return
            wait_s = stream.wait_seconds(polling=stop is not None)
            ready, _ = ray.wait([*stream.in_flight, *stream.starting], num_returns=1, timeout=wait_s)
            for ref in ready:
                yield from stream.collect(ref)
            yield from stream.expire()
    finally:
        stream.kill_all()
