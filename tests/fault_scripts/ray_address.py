"""Run by tests/test_faults.py in its own process (no Ray yet): an unreachable ``ray.address`` is a StageError
within seconds, and the local default starts a Ray of its own even when RAY_ADDRESS names a dead cluster (as a
stale ``ray start`` leaves it). Then the process exits with that instance up: at exit ``ray_start.stop_local_ray``
kills the monitor, then stops the rest with ``ray.shutdown()`` (not as Ray's exit handler, which pauses 0.5 s
first), and every process of the instance is stopped. Prints one line, from its last exit handler: RESULT {json}."""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

OUT: dict = {}
PROCESSES: dict = {}


def report() -> None:
    """Registered before Ray is imported, so it runs after every exit handler of Ray's and ours."""
    OUT["exit_codes"] = {name: [p.poll() for p in procs] for name, procs in PROCESSES.items()}
    print("RESULT " + json.dumps(OUT), flush=True)


atexit.register(report)
assert "ray" not in sys.modules

from pipeline.config import RayConfig  # noqa: E402
from pipeline.runtime.ray_start import ensure_ray  # noqa: E402
from stages.errors import StageError  # noqa: E402


def main() -> None:
    out = OUT
    start = time.monotonic()
    try:
        ensure_ray(RayConfig(address="127.0.0.1:1"))
        out["unreachable"] = "connected?!"
    except StageError as exc:
        out["unreachable"] = f"StageError: {exc}"
    out["unreachable_seconds"] = time.monotonic() - start
    os.environ["RAY_ADDRESS"] = "127.0.0.1:1"  # a user's cluster that has gone
    import ray

    ensure_ray(RayConfig(workers=1))
    out["local_cpus"] = ray.cluster_resources().get("CPU")
    node = ray._private.worker._global_node
    PROCESSES.update({name: [info.process for info in infos] for name, infos in node.all_processes.items()})
    kill = type(node)._kill_process_impl
    found = OUT.setdefault("alive_when_ray_stopped_it", {})

    def noting_kill(self, process_type, *args, **kwargs):  # Ray's shutdown stops each process type through it
        found[process_type] = [info.process.poll() is None for info in self.all_processes.get(process_type, [])]
        return kill(self, process_type, *args, **kwargs)

    type(node)._kill_process_impl = noting_kill
    shutdown = ray.shutdown  # Ray's exit handler holds this function itself: only calls through ray.shutdown count

    def noting_shutdown(*, _exiting_interpreter: bool = False) -> None:
        OUT.setdefault("shutdown_calls", []).append({"exiting_interpreter": _exiting_interpreter})
        shutdown(_exiting_interpreter=_exiting_interpreter)
        OUT["initialized_after_shutdown"] = ray.is_initialized()

    ray.shutdown = noting_shutdown


if __name__ == "__main__":
    main()
