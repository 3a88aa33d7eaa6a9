"""The shared Ray dispatch loop: bounded in flight, and one bad item never ends the batch."""

from __future__ import annotations

import os

import pytest


@pytest.mark.parametrize("per_actor", [1, 2])
def test_crashes_and_errors_become_results_and_the_batch_goes_on(ray_session, per_actor: int) -> None:
    import ray

    from pipeline.runtime.ray_pool import stream_to_actors

    class Doubler:  # defined here so Ray ships it by value (the test module is not importable in workers)
        """Doubles numbers; dies on -1 (like a segfault in a native library), raises on -2."""

        def run(self, x: int) -> int:
            if x == -1:
                os._exit(1)
            if x == -2:
                raise ValueError("bad item")
            return 2 * x

    actor_cls = ray.remote(num_cpus=0)(Doubler)
    items = [1, 2, -1, 3, -2, 4, 5, 6]
    results = dict(stream_to_actors(actor_cls.remote, 2, items, lambda a, x: a.run.remote(x), per_actor=per_actor))
    assert set(results) == set(items)
    assert isinstance(results[-1], ray.exceptions.RayActorError)
    assert isinstance(results[-2], ray.exceptions.RayTaskError)
    good = [x for x in items if x > 0 and not isinstance(results[x], BaseException)]
    assert all(results[x] == 2 * x for x in good)
    if per_actor == 1:  # a crash is blamed on exactly the item that caused it
        assert good == [x for x in items if x > 0]


def test_landmark_workers_get_huge_pages(ray_session, monkeypatch) -> None:
    """Local workers inherit glibc's huge-page malloc tunable from ensure_ray; on a cluster it travels as the
    actor's runtime_env; a user's own tunables are kept; ray.huge_pages=false asks for nothing."""
    import ray

    from pipeline.config import RayConfig
    from pipeline.runtime.ray_start import HUGE_PAGES_TUNABLE, huge_pages_tunables, landmark_worker_options

    @ray.remote(num_cpus=0)
    def worker_tunables() -> str:
        return os.environ.get("GLIBC_TUNABLES", "")

    assert HUGE_PAGES_TUNABLE in ray.get(worker_tunables.remote()).split(":")
    assert landmark_worker_options(RayConfig()) == {"num_cpus": 1}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0")
    assert huge_pages_tunables() == f"glibc.malloc.arena_max=2:{HUGE_PAGES_TUNABLE}"
    cluster = landmark_worker_options(RayConfig(address="auto"))
    assert cluster["runtime_env"]["env_vars"]["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGE_PAGES_TUNABLE}"
    assert "runtime_env" not in landmark_worker_options(RayConfig(address="auto", huge_pages=False))


def test_the_local_raylet_retries_its_sockets_every_100_ms(ray_session) -> None:
    """The local instance's raylet was started with 100 ms between connection tries and 100 tries (the same 10 s
    as Ray's default 10 x 1 s); a user who set either variable keeps their own settings."""
    import ray
    from ray._private import ray_constants

    from pipeline.runtime.ray_start import CONNECT_ATTEMPTS_KEY, CONNECT_INTERVAL_KEY, quick_connect_retries

    raylet = ray._private.worker._global_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    with open(f"/proc/{raylet.pid}/environ", "rb") as fh:
        env = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
    assert env[CONNECT_INTERVAL_KEY.encode()] == b"100"
    assert env[CONNECT_ATTEMPTS_KEY.encode()] == b"100"
    assert quick_connect_retries({CONNECT_INTERVAL_KEY: "2000"}) == {}
    assert quick_connect_retries({CONNECT_ATTEMPTS_KEY: "20"}) == {}
