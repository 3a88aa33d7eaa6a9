"""Run by tests/test_faults.py in its own process: a 2-node Ray cluster on this machine (ray.cluster_utils) loses
its worker node mid-run; every item must still finish, on the actor that remains. Prints one line: RESULT {json}."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from pipeline.runtime.ray_pool import stream_to_actors  # noqa: E402


class Slow:
    """Returns (x, its node id) after a short sleep, so items are in flight when the node goes."""

    def run(self, x: int) -> tuple[int, str]:
        time.sleep(0.3)
        return x, ray.get_runtime_context().get_node_id()


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    cluster.wait_for_nodes()
    actor_cls = ray.remote(num_cpus=1)(Slow)
    items = list(range(16))
    results, nodes, removed_at = {}, set(), None
    start = time.monotonic()
    try:
        for item, result in stream_to_actors(
            actor_cls.remote, 2, items, lambda a, x: a.run.remote(x), per_actor=2, start_timeout=15.0, max_tries=3
        ):
            results[item] = repr(result) if isinstance(result, BaseException) else result[0]
            if not isinstance(result, BaseException):
                nodes.add(result[1])
            if removed_at is None and len(results) >= 4 and len(nodes) == 2:
                cluster.remove_node(worker, allow_graceful=False)  # the worker node's raylet dies, like kill -9
                removed_at = len(results)
    finally:
        print(
            "RESULT "
            + json.dumps(
                {
                    "results": {str(k): v for k, v in results.items()},
                    "removed_at": removed_at,
                    "nodes": len(nodes),
                    "seconds": time.monotonic() - start,
                }
            ),
            flush=True,
        )
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
