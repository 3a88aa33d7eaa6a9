"""Runtime faults of issue 27: a failing step never poisons a batch (1), two runs never share a folder (3),
``ray.workers`` is bounded (9), and Ray failing to start is one ``error:`` line (11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import RayConfig
from pipeline.runtime.failures import DATA, ENVIRONMENT, describe_failure, failure_reason
from pipeline.runtime.folder_lock import hold_output, output_lock_file, release
from pipeline.runtime.output_folder import check_replaceable, claim_folder
from pipeline.runtime.progress import ENVIRONMENT_EXIT_CODE, RunSummary, exit_code, has_environment_failures
from stages.errors import StageError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def keep_env(monkeypatch):
    """ensure_ray sets a few environment variables: put them back after the test."""
    for key in (
        "PYTHONPATH",
        "OMP_NUM_THREADS",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO",
        "GLIBC_TUNABLES",
        "RAY_raylet_client_connect_timeout_milliseconds",
        "RAY_raylet_client_num_connect_attempts",
    ):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    return monkeypatch


# --- 1. one failing step never poisons the rest of a batch -------------------------------------------------------


def test_items_that_raise_give_their_slot_back_and_keep_their_own_reason(ray_session) -> None:
    """Far more failing items than workers x slots: every good item still succeeds, every bad one keeps its own
    reason (its first line whole), and none becomes NoWorkers."""
    import ray

    from pipeline.runtime.ray_pool import NoWorkers, stream_to_actors

    class Writer:  # defined here so Ray ships it by value
        """Fails like a full disk on odd items (a long path first), raises a data error on multiples of 10."""

        def run(self, x: int) -> int:
            if x % 10 == 0:
                raise ValueError(f"item {x} is malformed")
            if x % 2:
                path = "/cache/trajectory/" + "d" * 400 + f"/{x}.npz"
                raise OSError(28, "No space left on device", path)
            return 2 * x

    actor_cls = ray.remote(num_cpus=0)(Writer)
    items = list(range(1, 41))  # 20 full-disk failures, 4 data errors, 2 workers x 2 slots
    results = dict(stream_to_actors(actor_cls.remote, 2, items, lambda a, x: a.run.remote(x), per_actor=2))
    assert set(results) == set(items)
    assert not any(isinstance(r, NoWorkers) for r in results.values())
    for x in items:
        result = results[x]
        if x % 10 == 0:
            failure = describe_failure(result)
            assert failure.kind == DATA and failure.reason == f"ValueError: item {x} is malformed"
        elif x % 2:
            failure = describe_failure(result)
            assert failure.kind == ENVIRONMENT and failure.environment
            assert failure.reason.startswith("OSError: [Errno 28] No space left on device: ")
            assert failure.reason.endswith(f"/{x}.npz'")  # the first line is never cut
        else:
            assert result == 2 * x


def test_failure_reasons_keep_the_first_line_and_the_last() -> None:
    long_first = "x" * 2000
    assert failure_reason(ValueError(long_first)) == f"ValueError: {long_first}"
    traceback_like = "\x1b[36mray::Worker.process()\x1b[39m\n" + "\n".join(
        f'  File "f{i}.py", line {i}' for i in range(100)
    )
    reason = failure_reason(RuntimeError(traceback_like + "\nOSError: [Errno 30] Read-only file system: '/c'"))
    assert reason.startswith("RuntimeError: ray::Worker.process() | ")
    assert reason.endswith(" | OSError: [Errno 30] Read-only file system: '/c'") and "..." in reason
    assert "\n" not in reason and len(reason) < 500
    assert failure_reason(KeyError()) == "KeyError"


def test_environment_and_data_failures_are_told_apart() -> None:
    from pipeline.runtime.ray_pool import ItemTimeout, NoWorkers

    assert describe_failure(OSError(30, "Read-only file system")).kind == ENVIRONMENT
    assert describe_failure(MemoryError()).kind == ENVIRONMENT
    assert describe_failure(NoWorkers("no worker could be started")).kind == ENVIRONMENT
    assert describe_failure(ItemTimeout("took longer than the 5 s time limit")).kind == DATA  # a TimeoutError
    assert describe_failure(StageError("no face found")).kind == DATA
    assert describe_failure(ValueError("bad item")).kind == DATA


def test_a_worker_lost_after_its_retries_is_an_environment_failure(ray_session) -> None:
    import ray

    from pipeline.runtime.ray_pool import stream_to_actors

    class Crasher:
        def run(self, x: int) -> int:
            if x < 0:
                os._exit(1)
            return x

    actor_cls = ray.remote(num_cpus=0)(Crasher)
    results = dict(stream_to_actors(actor_cls.remote, 2, [1, -1, 2], lambda a, x: a.run.remote(x), per_actor=1))
    assert results[1] == 1 and results[2] == 2
    assert describe_failure(results[-1]).kind == ENVIRONMENT


def test_environment_failures_make_a_non_zero_exit_code_and_data_rows_do_not() -> None:
    summary = RunSummary(title="preprocess", done=3)
    summary.add_failure("S1", "no_face: no face found in 12 of 12 frames")
    assert not has_environment_failures(summary) and exit_code(summary) == 0
    assert "environment" not in summary.as_dict()
    summary.add_failure("S2", "error: worker failed: OSError: [Errno 28] No space left on device", ENVIRONMENT)
    assert has_environment_failures(summary) and exit_code(summary) == ENVIRONMENT_EXIT_CODE != 0
    assert summary.as_dict()["environment_failures"] == ["S2"] and summary.n_failed == 2
    assert "1 of the failures came from the environment" in summary.text()
    assert exit_code(RunSummary(title="t", failed=[("a", "no_face")])) == 1  # nothing done at all


# --- 3. two runs never write into one folder at once ---------------------------------------------------------------

_HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from pipeline.runtime.output_folder import claim_folder, hold_folder
from pipeline.runtime.folder_lock import hold_output
what, path = sys.argv[1], sys.argv[2]
try:
    {{"folder": lambda p: claim_folder(p, sys.argv[3]), "file": hold_output, "dir": hold_folder}}[what](path)
except Exception as exc:
    print(f"error: {{exc}}", flush=True)
    sys.exit(2)
print("held", flush=True)
time.sleep(120)
"""


def _holder(what: str, path: Path, kind: str = "cv") -> subprocess.Popen:
    """A second process holding ``path`` (a ``kind`` folder, an output file or an OUTPUT_DIR); returns once it
    holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(repo=str(REPO)), what, str(path), kind], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _claim_elsewhere(what: str, path: Path) -> tuple[int, str, float]:
    """(exit code, output, seconds) of another process trying to take ``path``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(repo=str(REPO)), what, str(path), "cv"], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline().strip()
    seconds = time.monotonic() - t0
    proc.kill()
    proc.wait()
    return (2 if line.startswith("error: ") else 0), line, seconds


def test_a_second_run_is_refused_at_once_and_a_killed_run_leaves_no_lock(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "cv"
    first = _holder("folder", folder)
    try:
        code, line, seconds = _claim_elsewhere("folder", folder)
        assert code == 2 and str(folder) in line and f"pid {first.pid}" in line and seconds < 20
        with pytest.raises(StageError, match=f"pid {first.pid}"):
            claim_folder(folder, "cv")
        with pytest.raises(StageError, match="another seqfer run"):
            check_replaceable(folder, "cv")  # the check before a verb's work refuses too
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert claim_folder(folder, "cv") == folder  # the kernel dropped the killed run's lock
    claim_folder(folder, "cv")  # the same process may claim again (a resumed run in one process)
    check_replaceable(folder, "cv")
    code, line, _ = _claim_elsewhere("folder", folder)
    assert code == 2 and f"pid {os.getpid()}" in line
    assert sorted(p.name for p in folder.iterdir()) == [".seqfer-folder"]  # no lock file left in the folder
    release(folder)
    assert _claim_elsewhere("folder", folder)[0] == 0


def test_a_folder_made_again_is_claimed_anew(tmp_path: Path) -> None:
    import shutil

    folder = claim_folder(tmp_path / "cv", "cv")
    shutil.rmtree(folder)
    claim_folder(folder, "cv")  # a new folder: this process locks it again
    code, line, _ = _claim_elsewhere("folder", folder)
    assert code == 2 and f"pid {os.getpid()}" in line


def test_an_output_file_is_held_by_one_run(tmp_path: Path) -> None:
    out = tmp_path / "results" / ("p" * 240 + ".csv")  # a long legal name: its lock file's name stays short
    first = _holder("file", out)
    try:
        code, line, _ = _claim_elsewhere("file", out)
        assert code == 2 and f"pid {first.pid}" in line and "writing this file" in line
        with pytest.raises(StageError, match=f"pid {first.pid}"):
            hold_output(out)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with hold_output(out):
        with hold_output(out):  # re-entrant
            pass
        assert _claim_elsewhere("file", out)[0] == 2  # still held by the outer hold
    assert not output_lock_file(out).exists()  # released: its lock file is gone
    assert _claim_elsewhere("file", tmp_path / "results" / "other.csv")[0] == 0  # another file: no conflict


def test_a_preprocess_into_a_held_folder_is_one_error_line(tiny_demo: Path, tmp_path: Path, ray_session, capsys):
    from pipeline.cli import main
    from pipeline.config import load_config, to_yaml

    out = tmp_path / "run"
    cfg = load_config(None, ["data.format=ckplus", f"data.root={tiny_demo}", f"output_dir={out}", "data.folds=2"])
    config = tmp_path / "c.yaml"
    config.write_text(to_yaml(cfg))
    first = _holder("folder", out / "preprocess", "preprocess")
    try:
        t0 = time.monotonic()
        assert main(["preprocess", str(config)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in err and time.monotonic() - t0 < 30
        assert str(out / "preprocess") in errors[0] and f"pid {first.pid}" in errors[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_an_output_dir_is_held_by_one_run(tmp_path: Path) -> None:
    from pipeline.runtime.output_folder import hold_folder

    first = _holder("dir", tmp_path / "out")
    try:
        with pytest.raises(StageError, match=f"pid {first.pid}"):
            hold_folder(tmp_path / "out")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert hold_folder(tmp_path / "out") == tmp_path / "out" and hold_folder(tmp_path / "out")


# --- 9. ray.workers is bounded ---------------------------------------------------------------------------------------


def test_workers_are_capped_at_the_cores_with_a_note(monkeypatch, caplog) -> None:
    from pipeline.runtime import workers

    assert workers.capped_workers(10000, 2) == 2
    assert workers.capped_workers(1, 16) == 1
    assert workers.capped_workers(4, None) == 4
    assert workers.capped_workers(3, 0) == 1
    monkeypatch.setattr(workers, "local_cores", lambda: 3)
    monkeypatch.setattr(workers, "cluster_cpus", lambda: None)
    monkeypatch.setattr(workers, "_noted", set())
    with caplog.at_level("WARNING", logger="pipeline.runtime.workers"):
        assert workers.worker_count(RayConfig(workers=10000)) == 3
        assert workers.worker_count(RayConfig(workers=10000)) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "10000 workers asked for, but there are 3 CPU cores of this machine: using 3 workers"
    ]  # noted once
    assert workers.worker_count(RayConfig(workers=2)) == 2
    assert workers.worker_count(RayConfig(workers=4), requested=8) == 3  # e.g. cv.parallel
    # on a cluster the local cores do not count; the cluster's CPUs do, when Ray says
    assert workers.worker_count(RayConfig(workers=64, address="10.0.0.1:6379")) == 64
    monkeypatch.setattr(workers, "cluster_cpus", lambda: 32)
    assert workers.worker_count(RayConfig(workers=64, address="10.0.0.1:6379")) == 32


def test_local_cores_reads_affinity_and_a_cgroup_quota(tmp_path: Path) -> None:
    from pipeline.runtime.workers import _cgroup_cpu_quota, local_cores

    assert 1 <= local_cores() <= (os.cpu_count() or 1)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_cpu_quota(tmp_path / "cpu.max") == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_quota(tmp_path / "cpu.max") is None
    assert _cgroup_cpu_quota(tmp_path / "missing") is None


def test_ray_is_started_with_the_capped_cpus(keep_env) -> None:
    import ray

    from pipeline.runtime import ray_start, workers

    monkeypatch = keep_env
    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(workers, "local_cores", lambda: 2)
    ray_start.ensure_ray(RayConfig(workers=10000))
    assert seen["num_cpus"] == 2 and seen["address"] == "local"


# --- 11. Ray failing to start is one error: line -----------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("Failed to start the GCS server"),
        ConnectionError("raylet died"),
        OSError(12, "Cannot allocate memory"),
        MemoryError(),
        Exception("The current node timed out during startup. This could happen because some of the raylet failed"),
    ],
)
def test_ray_failing_to_start_locally_is_a_stage_error(keep_env, exc: BaseException) -> None:
    """What ray.init raises under a memory limit (a plain Exception when its raylet dies under ulimit -v)."""
    import ray

    from pipeline.runtime import ray_start

    def fail(**_kw):
        raise exc

    monkeypatch = keep_env
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the tests' shared session is never touched
    monkeypatch.setattr(ray, "init", fail)
    with pytest.raises(StageError) as info:
        ray_start.ensure_ray(RayConfig(workers=1))
    message = str(info.value)
    assert message.startswith("Ray could not start its local instance (") and type(exc).__name__ in message
    assert "ulimit -v" in message and "\n" not in message
