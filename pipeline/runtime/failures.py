"""What an item's failure means: its one-line true reason, and whether the data or the environment is to blame.

A batch verb turns each failed item into a row with a reason. Two kinds of failure:

- ``data``: something about this item (an unreadable video, no face, a bug it triggers, a time limit it ran past):
  the rest of the batch is fine and the run ends normally, reporting the row;
- ``environment``: the machine refused the work (``OSError``: a full disk, a read-only folder, ``ulimit -f``;
  ``MemoryError`` or Ray's out-of-memory killer; a worker or node lost after its retries; no worker could start):
  other items may have failed the same way and the run must end with a non-zero exit code
  (:func:`pipeline.runtime.progress.exit_code`).

The reason names the exception type and keeps the first line of its message whole (an ``OSError``'s
``[Errno 28] No space left on device: '...'``); only later lines are shortened, and a traceback's last line (where
the cause is) is kept too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DATA = "data"
ENVIRONMENT = "environment"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours its "ray::Worker.process()" line

REST_CHARS = 300
"""Characters kept of a message's lines after its first (the first line and the last are always whole)."""

_ENVIRONMENT_RAY_ERRORS = (
    "RayActorError",  # with its subclasses ActorDiedError, ActorUnavailableError: a worker lost after its retries
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "OutOfMemoryError",
    "OutOfDiskError",
    "ObjectStoreFullError",
    "ObjectLostError",
    "OwnerDiedError",
    "RaySystemError",
    "ActorUnschedulableError",
    "TaskUnschedulableError",
    "RuntimeEnvSetupError",
)


class ItemTimeout(TimeoutError):
    """An item ran past its time limit; its worker was stopped (the item becomes a ``timeout`` row)."""


class NoWorkers(RuntimeError):
    """No worker could be started or scheduled on the cluster for the items still to do."""


@dataclass(frozen=True)
class Failure:
    """One item's failure: ``kind`` is :data:`DATA` or :data:`ENVIRONMENT`; ``reason`` is one line."""

    kind: str
    reason: str

    @property
    def environment(self) -> bool:
        return self.kind == ENVIRONMENT


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised (``RayTaskError.cause``, through nested tasks), else ``exc`` itself."""
    seen = 0
    while type(exc).__name__.startswith("RayTaskError") and seen < 10:
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or cause is exc:
            break
        exc, seen = cause, seen + 1
    return exc


def failure_kind(exc: BaseException) -> str:
    """:data:`ENVIRONMENT` for a failure of the machine (``OSError``, ``MemoryError``, a lost worker or node, Ray
    out of memory or disk, no worker could start), :data:`DATA` for anything else (see the module doc)."""
    cause = root_cause(exc)
    if isinstance(cause, ItemTimeout):  # a TimeoutError, hence an OSError, but about this item
        return DATA
    if isinstance(cause, (OSError, MemoryError, NoWorkers)):
        return ENVIRONMENT
    ray = _ray_exceptions()
    if ray is not None:
        classes = tuple(getattr(ray, name) for name in _ENVIRONMENT_RAY_ERRORS if hasattr(ray, name))
        if isinstance(cause, classes) or isinstance(exc, classes):
            return ENVIRONMENT
    return DATA


def failure_reason(exc: BaseException, rest_chars: int = REST_CHARS) -> str:
    """One line: the type of the root cause (:func:`root_cause`) and its message, whose first line is never
    cut; the lines after it are joined with `` | `` and shortened to ``rest_chars``, except the last, kept whole.
    A task's exception comes without Ray's wrapper (``OSError: [Errno 28] No space left on device: '/x'``)."""
    cause = root_cause(exc)
    lines = [line.strip() for line in _ANSI.sub("", str(cause)).splitlines() if line.strip()]
    name = type(cause).__name__
    if not lines:
        return name
    parts = [lines[0]]
    if len(lines) > 2:
        middle = " | ".join(lines[1:-1])
        parts.append(middle if len(middle) <= rest_chars else middle[: max(0, rest_chars - 3)] + "...")
    if len(lines) > 1:
        parts.append(lines[-1])
    return f"{name}: {' | '.join(parts)}"


def describe_failure(exc: BaseException) -> Failure:
    """The :class:`Failure` of an item whose result is ``exc`` (what :func:`~pipeline.runtime.ray_pool.
    stream_to_actors` yields for an item that failed)."""
    return Failure(failure_kind(exc), failure_reason(exc))


def _ray_exceptions():  # noqa: ANN202 - the module, or None where Ray is not installed
    try:
        import ray.exceptions
    except ImportError:
        return None
    return ray.exceptions
