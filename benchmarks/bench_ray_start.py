"""How long seqfer's local Ray takes to start, with its connection retries every 100 ms and with Ray's defaults.

    python benchmarks/bench_ray_start.py [--runs 10]

Each run is a fresh process that calls ``pipeline.runtime.ray_start.ensure_ray`` (2 CPUs, as ``seqfer preprocess``
does), then runs one task on each of the 2 workers, then stops Ray. The two settings alternate, run after run:

- ``100 ms``: seqfer's (``quick_connect_retries``: 100 tries 100 ms apart);
- ``Ray's default``: the same call with ``RAY_raylet_client_connect_timeout_milliseconds=1000`` and
  ``RAY_raylet_client_num_connect_attempts=10`` set (Ray's defaults; seqfer keeps a user's own values).

Each run reports ``ray.init``'s seconds, the first tasks' seconds and, from the new session's ``raylet.out``, the
time between the object store's start and the raylet's next step (``store wait``: the raylet's first connection to
its store, retried after one interval when the store's socket was not ready yet). While each child starts Ray, a
second process imports pandas and scikit-learn, as the manifest scan does beside ``ray.init`` in ``seqfer
preprocess``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"RAY_raylet_client_connect_timeout_milliseconds": "1000", "RAY_raylet_client_num_connect_attempts": "10"}
LOAD = "import pandas, sklearn.model_selection"


def child() -> None:
    """Start Ray as seqfer does; print one JSON line: init and first-task seconds and the session folder."""
    sys.path.insert(0, str(REPO))
    import ray

    from pipeline.config import RayConfig
    from pipeline.runtime.ray_start import ensure_ray

    t0 = time.perf_counter()
    ensure_ray(RayConfig(workers=2))
    t1 = time.perf_counter()

    @ray.remote(num_cpus=1)
    def one() -> int:
        return 1

    ray.get([one.remote() for _ in range(2)])
    t2 = time.perf_counter()
    session = ray._private.worker._global_node.get_session_dir_path()
    print(json.dumps({"init": t1 - t0, "first_tasks": t2 - t1, "session": session}), flush=True)


def store_wait(session: str) -> float | None:
    """Seconds between the raylet's object store start and its object manager's start, from ``raylet.out``."""

    def stamp(marker: str) -> dt.datetime | None:
        for line in lines:
            if marker in line:
                return dt.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        return None

    try:
        lines = (Path(session) / "logs" / "raylet.out").read_text(errors="replace").splitlines()
    except OSError:
        return None
    start, after = stamp("Plasma store debug dump"), stamp("ObjectManager server started")
    return (after - start).total_seconds() if start and after else None


def run_once(extra_env: dict[str, str]) -> dict:
    """One fresh process starting Ray (with a scan-like import beside it); its figures."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS} | extra_env
    load = subprocess.Popen([sys.executable, "-c", LOAD])
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True, timeout=300
        ).stdout
    finally:
        load.wait()
    result = json.loads(out.strip().splitlines()[-1])
    result["store_wait"] = store_wait(result.pop("session"))
    return result


def main(args: argparse.Namespace) -> None:
    settings = {"100 ms": {}, "Ray's default": DEFAULTS}
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for i in range(args.runs):
        for name, extra in settings.items():
            r = run_once(extra)
            results[name].append(r)
            wait = "?" if r["store_wait"] is None else f"{r['store_wait']:.2f}"
            print(f"run {i + 1} {name:>13}: init {r['init']:.2f} s, store wait {wait} s", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print("| setting | runs | ray.init median (min-max) | mean | store waits of 1 s | first tasks median |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rs in results.items():
        inits = [r["init"] for r in rs]
        first_tasks = statistics.median(r["first_tasks"] for r in rs)
        long_waits = sum(1 for r in rs if (r["store_wait"] or 0.0) >= 0.9)
        print(
            f"| {name} | {len(rs)} | {statistics.median(inits):.2f} ({min(inits):.2f}-{max(inits):.2f}) s "
            f"| {statistics.mean(inits):.2f} s | {long_waits} | {first_tasks:.2f} s |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs of each setting, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    child() if parsed.child else main(parsed)
