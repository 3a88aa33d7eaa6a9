"""Run by tests/test_faults.py in its own process (no Ray yet): an unreachable ``ray.address`` is a StageError
within seconds, and the local default starts a Ray of its own even when RAY_ADDRESS names a dead cluster (as a
stale ``ray start`` leaves it). Prints one line: RESULT {json}."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.config import RayConfig  # noqa: E402
from pipeline.runtime.ray_pool import ensure_ray  # noqa: E402
from stages.errors import StageError  # noqa: E402


def main() -> None:
    out: dict = {}
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
    ray.shutdown()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
