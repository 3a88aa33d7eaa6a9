"""The preprocess driver: Ray workers, resumable cache, failures table, identical results whatever happens.

Uses the tiny generated demo set (``tiny_demo``: CK+ layout, 4 subjects, 8 labelled sequences plus unlabelled
ones) and one shared Ray session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Config, load_config
from pipeline.preprocess.run import landmark_tables, preprocess_dir, run_preprocess
from pipeline.preprocess.to_stages import sequence_config, source_from_row
from stages.preprocess.sequence import SequenceProcessor

REPO = Path(__file__).resolve().parent.parent


def _config(root: Path, out: Path, *extra: str) -> Config:
    return load_config(
        None,
        [
            "data.format=ckplus",
            f"data.root={root}",
            "data.folds=2",
            f"output_dir={out}",
            "ray.workers=2",
            *extra,
        ],
    )


def _records(cfg: Config) -> dict[str, object]:
    from data_manifests.schema import read_manifest

    df, _ = read_manifest(cfg.manifest_path)
    proc = SequenceProcessor(sequence_config(cfg), cfg.cache_dir)
    return {row["sequence_id"]: proc.load(source_from_row(row)) for _, row in df.iterrows()}


def _assert_same_records(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key] is None or b[key] is None:
            assert a[key] is None and b[key] is None, key
            continue
        for field in ("frame_indices", "landmarks", "success", "aligned", "trajectory"):
            np.testing.assert_array_equal(getattr(a[key], field), getattr(b[key], field), err_msg=f"{key}.{field}")


@pytest.fixture(scope="module")
def first_run(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> Config:
    cfg = _config(tiny_demo, tmp_path_factory.mktemp("pre_a"))
    summary = run_preprocess(cfg)
    assert summary.done > 0
    return cfg


def test_every_sequence_has_a_row_and_a_landmark_table(first_run: Config) -> None:
    index = pd.read_parquet(preprocess_dir(first_run) / "index.parquet")
    manifest = pd.read_parquet(first_run.manifest_path)
    assert list(index["sequence_id"]) == list(manifest["sequence_id"])
    ok = index[index["status"] == "ok"]
    assert len(ok) >= 6, index[["sequence_id", "status", "reason"]]
    tables = landmark_tables(first_run)
    for seq in ok["sequence_id"]:
        table = tables.read(seq)
        assert {"frame", "timestamp", "confidence", "success", "x_0", "y_67"} <= set(table.columns)
        assert table["frame"].iloc[0] == 1  # OpenFace convention: 1-based
        assert len(table) == index.set_index("sequence_id").loc[seq, "n_frames"]
    # the parts hold every sequence with landmarks once; a Parquet reader opens the folder as one dataset
    everything = pd.read_parquet(tables.folder)
    assert set(ok["sequence_id"]) <= set(everything["sequence_id"])
    assert everything.groupby("sequence_id").size().to_dict() == {
        s: n
        for s, n in zip(index["sequence_id"], index["n_frames"], strict=True)
        if s in set(everything["sequence_id"])
    }


def test_summary_says_where_the_time_went(first_run: Config) -> None:
    import json

    summary = json.loads((preprocess_dir(first_run) / "summary.json").read_text())
    stages = summary["stage_seconds"]
    for stage in ("decode", "detect", "track", "align", "trajectory", "cache_write", "table_write", "waiting_on_ray"):
        assert stages[stage] >= 0.0, stage
    assert stages["decode"] > 0 and stages["track"] > 0 and stages["detect"] > 0
    # every stage is a part of the workers' time, so together they cannot exceed workers x dispatch time
    assert sum(stages.values()) <= 2 * summary["driver_seconds"]["dispatch"] + 0.5
    driver = summary["driver_seconds"]
    assert 0 < driver["first_result"] <= driver["startup"] + summary["seconds"]
    assert summary["peak_rss_mb"]["driver"] > 0
    assert summary["peak_rss_mb"]["workers"] and all(v > 0 for v in summary["peak_rss_mb"]["workers"].values())


def test_preprocess_workers_import_no_torch_or_sklearn() -> None:
    """A preprocessing worker imports only the stages it runs: the worker module pulls in neither torch (the
    models) nor sklearn (the fold splitter), and neither does the driver's preprocess module."""
    code = (
        "import sys, pipeline.preprocess.worker, pipeline.preprocess.run; "
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy.stats') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_rerun_skips_everything(first_run: Config) -> None:
    summary = run_preprocess(first_run)
    assert summary.done == 0
    assert summary.skipped + summary.n_failed == len(pd.read_parquet(first_run.manifest_path))


def test_changed_trajectory_setting_recomputes_only_trajectories(first_run: Config, tmp_path: Path) -> None:
    cfg = first_run.model_copy(deep=True)
    cfg.preprocess.trajectory.length = 9
    before = {ns: len(list((cfg.cache_dir / ns).rglob("*.npz"))) for ns in ("landmarks", "aligned", "trajectory")}
    run_preprocess(cfg)
    after = {ns: len(list((cfg.cache_dir / ns).rglob("*.npz"))) for ns in ("landmarks", "aligned", "trajectory")}
    assert after["landmarks"] == before["landmarks"] and after["aligned"] == before["aligned"]
    assert after["trajectory"] > before["trajectory"]
    rec = next(r for r in _records(cfg).values() if r is not None)
    assert rec.trajectory.shape == (9, 68, 2)


def test_worker_count_does_not_change_results(first_run: Config, tiny_demo: Path, tmp_path: Path) -> None:
    cfg1 = _config(tiny_demo, tmp_path / "one_worker", "ray.workers=1")
    run_preprocess(cfg1)
    _assert_same_records(_records(first_run), _records(cfg1))


def test_faceless_sequences_are_in_the_failures_table(tiny_demo: Path, tmp_path: Path, ray_session) -> None:
    import shutil

    import cv2

    root = tmp_path / "ck"
    shutil.copytree(tiny_demo, root)
    seq_dirs = sorted(p for p in (root / "cohn-kanade-images").glob("S*/*") if p.is_dir())
    blank = seq_dirs[0]
    holes = sorted(seq_dirs[1].glob("*.png"))[2:4]  # two faceless frames inside an otherwise good sequence
    for frame in [*blank.glob("*.png"), *holes]:
        img = cv2.imread(str(frame), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(frame), np.full_like(img, 128))
    cfg = _config(root, tmp_path / "out")
    summary = run_preprocess(cfg)
    failures = pd.read_csv(preprocess_dir(cfg) / "failures.csv")
    blank_id = f"{blank.parent.name}_{blank.name}"
    row = failures[(failures["sequence_id"] == blank_id) & failures["frame"].isna()]
    assert list(row["status"]) == ["no_face"]
    assert blank_id in [item for item, _ in summary.failed]
    assert summary.done + summary.skipped >= 5
    holes_id = f"{seq_dirs[1].parent.name}_{seq_dirs[1].name}"
    assert list(failures.loc[failures["sequence_id"] == holes_id, "status"]) == ["no_face_frame"] * 2
    # a re-run served from the cache rewrites the same failures table (the faceless frames are not forgotten)
    again = run_preprocess(cfg)
    assert again.done == 0 and again.skipped == summary.done + summary.skipped
    pd.testing.assert_frame_equal(pd.read_csv(preprocess_dir(cfg) / "failures.csv"), failures)


@pytest.mark.slow
def test_kill_9_mid_run_loses_nothing(tiny_demo: Path, tmp_path: Path, first_run: Config) -> None:
    """A preprocess killed with SIGKILL mid-run, then re-run, ends identical to an uninterrupted run."""
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "preprocess",
        str(REPO / "configs" / "ckplus.yaml"),
        "--set",
        f"data.root={tiny_demo}",
        "--set",
        "data.folds=2",
        "--set",
        f"output_dir={out}",
        "--set",
        "ray.workers=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "cache" / "trajectory").rglob("*.npz"))) >= 2:
            break
        time.sleep(0.05)
    killed_mid_run = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_mid_run, "the run finished before it could be killed"
    partial = len(list((out / "cache" / "trajectory").rglob("*.npz")))
    assert partial >= 2
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "skipped (cached)" in done.stderr
    cfg = _config(tiny_demo, out)
    _assert_same_records(_records(cfg), _records(first_run))


def test_a_scan_error_while_ray_starts_still_ends_the_run(tmp_path: Path, ray_session) -> None:
    """A first run scans the dataset in a thread while Ray starts; the scan's error (here: no CK+ tree under
    the root) is the run's error, and nothing is written."""
    from data_manifests.errors import ManifestError

    root = tmp_path / "not_ckplus"
    root.mkdir()
    cfg = _config(root, tmp_path / "out")
    with pytest.raises(ManifestError, match="no CK\\+ layout found"):
        run_preprocess(cfg)
    assert not preprocess_dir(cfg).exists()
