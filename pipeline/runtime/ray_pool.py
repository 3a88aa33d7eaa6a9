"""The one streaming-dispatch loop every parallel verb uses: items to Ray actors, with retries, time limits and
a pool that shrinks to what the cluster can schedule. Ray itself is started by :mod:`pipeline.runtime.ray_start`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipeline.runtime.failures import ItemTimeout, NoWorkers

log = logging.getLogger(__name__)


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
