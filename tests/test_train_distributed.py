"""`train.workers` > 1: one network trained data-parallel on Ray Train (:mod:`pipeline.train.distributed`).

Contract: N workers run the one training path (``train_member`` with a ``Shard``) on the same global batches as one
process, so the first epoch's training loss is close to the one-process run's; they finish with finite weights and
one history row per epoch; a worker lost after an epoch restarts from Ray Train's last checkpoint (the epoch is not
trained twice); the workers reach a 2-node cluster given by ``ray.address``; a cluster that cannot hold the workers
and ``train.workers`` 0 are refused. Tiny synthetic data (32 random 1x16x16 uint8 crops), tiny appearance model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipeline.train.distributed import check_capacity, epoch_line, restore_worker_state, train_member_on_ray
from stages.errors import StageError
from stages.learning.models import ModelConfig, TrainConfig
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.member import train_member

REPO = Path(__file__).resolve().parent.parent
K = 3
MODEL = {
    "streams": "appearance",
    "appearance": {"channels": [4, 8], "skip_dim": 4, "dropout": 0.0},
    "input": {"appearance": "last_k", "k": 1, "size": 16},
}
TRAIN = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "patience": 5, "workers": 2}
ARGS = {"seed": 0, "member": 0, "fold": 0, "where": "", "appearance_init": None}


def tiny_data(n: int, seed: int) -> ArrayDataset:
    """``n`` random 1x16x16 uint8 crops, a 1-step trajectory, labels 0..K-1 in turn."""
    rng = np.random.default_rng(seed)
    app = rng.integers(0, 256, size=(n, 1, 16, 16), dtype=np.uint8)
    traj = rng.normal(scale=0.05, size=(n, 1, 68, 2)).astype(np.float32)
    return ArrayDataset(app, traj, (np.arange(n) % K).astype(np.int64))


def on_ray(tmp_path: Path, hook=None, **train) -> object:
    cfg = TrainConfig.model_validate({**TRAIN, **train})
    model = ModelConfig.model_validate(MODEL)
    return train_member_on_ray(model, K, tiny_data(32, 0), tiny_data(12, 1), cfg, ARGS, "cpu", tmp_path, "key", hook)


def test_two_workers_train_the_batches_one_process_trains(ray_session, tmp_path) -> None:
    result = on_ray(tmp_path)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(torch.isfinite(p).all() for p in result.model.state_dict().values() if p.is_floating_point())
    assert 1 <= result.best_epoch <= 2
    one = train_member(
        ModelConfig.model_validate(MODEL),
        K,
        tiny_data(32, 0),
        tiny_data(12, 1),
        TrainConfig.model_validate({**TRAIN, "workers": 1}),
        seed=0,
        member=0,
        fold=0,
    )
    # Same initial weights, same batches and augmentation, no dropout: the first epoch's mean training loss differs
    # only through BatchNorm normalising over each worker's 4 rows instead of the batch's 8 (and float sum order).
    # Measured 0.2% apart (1.1783 vs 1.1807); 1% allows for BLAS differences while a different initialisation or
    # batch order (the loss sits near ln 3 on random data, so only a tight bound tells) would likely exceed it.
    first, ref = result.history[0]["train_loss"], one.history[0]["train_loss"]
    assert abs(first - ref) / ref < 0.01, (first, ref)


def test_a_lost_worker_resumes_from_the_last_epoch(ray_session, tmp_path) -> None:
    log, marker = tmp_path / "epochs.txt", tmp_path / "failed-once"

    def fail_once(rank: int, row: dict) -> None:  # runs in the workers (pickled by value)
        with open(log, "a") as f:
            f.write(f"{rank} {row['epoch']}\n")
        if rank == 1 and row["epoch"] == 1 and not marker.exists():
            marker.touch()
            time.sleep(5)  # Ray Train's controller collects a report within its 2 s poll: epoch 1 is checkpointed
            os._exit(1)  # the worker process dies, as a lost node's would

    result = on_ray(tmp_path / "storage", fail_once, epochs=3)
    assert marker.exists()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    trained = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert trained.count((1, 1)) == 1 and (1, 2) in trained  # epoch 1 was not trained again after the restart


def test_restore_worker_state_copies_the_ranks_file(tmp_path) -> None:
    from ray.train import Checkpoint

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "rank1.pt").write_bytes(b"state of rank 1")
    assert not restore_worker_state(None, 1, tmp_path / "a.pt")
    assert not restore_worker_state(Checkpoint.from_directory(str(folder)), 0, tmp_path / "b.pt")
    assert restore_worker_state(Checkpoint.from_directory(str(folder)), 1, tmp_path / "c.pt")
    assert (tmp_path / "c.pt").read_bytes() == b"state of rank 1"


def test_workers_the_cluster_cannot_hold_are_refused(ray_session) -> None:
    with pytest.raises(StageError, match="do not fit on the Ray cluster"):
        check_capacity(64, 1, False)
    with pytest.raises(StageError, match="GPU"):
        check_capacity(1, 1, True)


def test_each_epoch_is_one_progress_line() -> None:
    row = {"epoch": 3, "train_loss": 0.51234, "train_acc": 0.8, "val_loss": 0.7, "val_acc": 0.625, "lr": 0.01}
    assert epoch_line(row, 30) == "train: epoch 3/30, train loss 0.512, val acc 0.625, val loss 0.700"
    assert epoch_line(row, 30, "member 2/3").startswith("train: member 2/3: epoch 3/30,")


def test_workers_zero_is_refused() -> None:
    with pytest.raises(ValidationError):
        TrainConfig(workers=0)
    assert TrainConfig().workers == 1
    assert "workers" not in TrainConfig(workers=2).model_dump()  # not in the config hash: cv's keys are unchanged


# --- a 2-node cluster on this machine ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_groups(temp_dir: str) -> set[int]:
    """Process groups of the Ray processes started with ``temp_dir`` (each `ray start` runs in a session of its
    own: :func:`two_node_cluster`), never this process's group."""
    groups = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if temp_dir in cmd:
                groups.add(os.getpgid(int(pid)))
        except (OSError, ProcessLookupError):
            continue
    return groups - {os.getpgrp()}


def _stop_nodes(temp_dirs: list[str]) -> None:
    """SIGTERM, then after 5 s SIGKILL, the process groups of the nodes started in ``temp_dirs`` only (not `ray
    stop`, which would stop every Ray on the machine, the test session's own included)."""
    groups = set().union(*(_node_groups(d) for d in temp_dirs))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_node_groups(d) for d in temp_dirs):
            time.sleep(0.5)


@pytest.fixture
def two_node_cluster():
    """A head node and a second node, one CPU each, on this machine: `ray start --head`, then `ray start --address`
    with its own temp dir (Ray allows several nodes per machine when each has its own temp dir). Authentication
    off on all three processes (RAY_AUTH_MODE=disabled; a real cluster shares ~/.ray/auth_token instead).
    Yields (address, environment for the driver)."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed")
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    # seqfer importable on the nodes' workers, as an installed package would be on a real cluster
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(paths),
    }
    temp_dirs = [tempfile.mkdtemp(prefix="rt2n"), tempfile.mkdtemp(prefix="rt2n")]  # short: socket paths
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        head = [ray_cli, "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false"]
        head += [f"--temp-dir={temp_dirs[0]}", *common]
        subprocess.run(head, env=env, check=True, capture_output=True, start_new_session=True)
        node = [ray_cli, "start", f"--address={address}", f"--temp-dir={temp_dirs[1]}", *common]
        subprocess.run(node, env=env, check=True, capture_output=True, start_new_session=True)
        yield address, env
    finally:
        _stop_nodes(temp_dirs)
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


TWO_NODE_RUN = """
import json, sys
sys.path.insert(0, {tests!r})
import ray
from test_train_distributed import on_ray
from pipeline.config import RayConfig
from pipeline.runtime.ray_start import ensure_ray
from pathlib import Path

ensure_ray(RayConfig(address={address!r}))
nodes = Path({nodes!r})

def where(rank, row):
    with open(nodes, "a") as f:
        f.write(ray.get_runtime_context().get_node_id() + "\\n")

result = on_ray(Path({storage!r}), where)
print(json.dumps({{"epochs": [r["epoch"] for r in result.history], "nodes": len(ray.nodes())}}))
"""


def test_two_workers_on_a_two_node_cluster(two_node_cluster, tmp_path) -> None:
    address, env = two_node_cluster
    nodes = tmp_path / "nodes.txt"
    code = TWO_NODE_RUN.format(
        tests=str(REPO / "tests"), address=address, nodes=str(nodes), storage=str(tmp_path / "storage")
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts == {"epochs": [1, 2], "nodes": 2}
    assert len(set(nodes.read_text().split())) == 2  # one worker on each node
