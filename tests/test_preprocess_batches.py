"""`seqfer preprocess` of a one-image-per-item set (FER2013's layout, in miniature): items travel in batches, their
landmark tables are parts of many sequences, and resuming, forcing, damage and kill -9 still lose nothing and redo
nothing finished.

The set: 48x48 face crops (the packaged face framed like CK+48, varied in brightness and mirrored) in class folders,
each image its own sequence, plus one flat image (no face).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from test_preprocess_pipeline import _records

from pipeline.config import Config, load_config
from pipeline.preprocess.run import landmark_tables, preprocess_dir, run_preprocess
from stages.preprocess.landmark_store import PART_RE, part_keys

REPO = Path(__file__).resolve().parent.parent
N_FACES = 24


@pytest.fixture(scope="module")
def crops_root(tight_crop, tmp_path_factory: pytest.TempPathFactory) -> Path:
    crop, _ = tight_crop
    root = tmp_path_factory.mktemp("crops")
    for i in range(N_FACES):
        image = np.clip(crop.astype(np.int16) + (i % 6) * 6 - 15, 0, 255).astype(np.uint8)
        image = image[:, ::-1] if i % 2 else image
        folder = root / ("happy" if i % 3 else "anger")
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"face_{i:03d}.png"), image)
    cv2.imwrite(str(root / "anger" / "flat_000.png"), np.full((48, 48), 128, np.uint8))
    return root


def _config(root: Path, out: Path, *extra: str) -> Config:
    return load_config(
        REPO / "configs" / "ck48.yaml",
        [
            f"data.root={root}",
            "data.name_pattern=^(?P<subject>.+)$",
            "data.folds=2",
            f"output_dir={out}",
            "ray.workers=2",
            *extra,
        ],
    )


def _index(cfg: Config) -> pd.DataFrame:
    return pd.read_parquet(preprocess_dir(cfg) / "index.parquet").set_index("sequence_id")


def _parts(cfg: Config) -> list[Path]:
    return landmark_tables(cfg).parts()


def _assert_tables_complete(cfg: Config) -> None:
    """Every sequence with landmarks is in exactly one part, with a row per frame and its current cache key."""
    index = _index(cfg)
    with_landmarks = index[index["n_frames"] > 0]
    everything = pd.read_parquet(landmark_tables(cfg).folder)
    assert everything.groupby("sequence_id").size().to_dict() == with_landmarks["n_frames"].to_dict()
    keys = {sid: key for part in _parts(cfg) for sid, key in part_keys(part).items()}
    assert keys == with_landmarks["landmarks_key"].to_dict()


@pytest.fixture(scope="module")
def batched_run(crops_root: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> Config:
    cfg = _config(crops_root, tmp_path_factory.mktemp("batched"))
    summary = run_preprocess(cfg)
    assert summary.done == N_FACES and [sid for sid, _ in summary.failed] == ["flat_000"]
    return cfg


def test_items_are_batched_into_parts_of_many_sequences(batched_run: Config) -> None:
    parts = _parts(batched_run)
    assert 1 < len(parts) < N_FACES and all(PART_RE.fullmatch(p.name) for p in parts)
    _assert_tables_complete(batched_run)
    table = landmark_tables(batched_run).read("face_003")
    assert len(table) == 1 and table["frame"].tolist() == [1] and table["success"].tolist() == [1]
    assert landmark_tables(batched_run).read("flat_000")["success"].tolist() == [0]
    failures = pd.read_csv(preprocess_dir(batched_run) / "failures.csv")
    assert set(failures["sequence_id"]) == {"flat_000"}  # the sequence and its frame
    entries = list((Path(batched_run.cache_dir) / "aligned").rglob("*.npz"))
    assert len(entries) == N_FACES and all(p.stat().st_size < 8000 for p in entries)  # 96x96 crops as PNG


def test_a_rerun_redoes_nothing_and_lost_tables_come_back_from_the_cache(batched_run: Config) -> None:
    summary = run_preprocess(batched_run)
    assert summary.done == 0 and summary.skipped == N_FACES
    for part in _parts(batched_run):
        part.unlink()
    summary = run_preprocess(batched_run)
    assert summary.done == 0 and summary.skipped == N_FACES  # served from the cache, tables rewritten
    _assert_tables_complete(batched_run)


def test_force_replaces_every_part_and_keeps_each_sequence_once(batched_run: Config, tmp_path: Path) -> None:
    before = _records(batched_run)
    old_parts = set(_parts(batched_run))
    summary = run_preprocess(batched_run, force=True)
    assert summary.done == N_FACES
    assert not old_parts & set(_parts(batched_run))  # all rows replaced: the old parts are gone
    _assert_tables_complete(batched_run)
    after = _records(batched_run)
    for sid, rec in before.items():
        if rec is not None:
            np.testing.assert_array_equal(rec.aligned, after[sid].aligned)
            np.testing.assert_array_equal(rec.landmarks, after[sid].landmarks)


def test_a_damaged_entry_in_a_batch_is_recomputed_alone(batched_run: Config) -> None:
    index = _index(batched_run)
    key = index.loc["face_005", "aligned_key"]
    path = Path(batched_run.cache_dir) / "aligned" / key[:2] / f"{key}.npz"
    path.write_bytes(path.read_bytes()[:100])
    summary = run_preprocess(batched_run)
    assert summary.done == 1 and summary.skipped == N_FACES - 1
    assert not _index(batched_run).loc["face_005", "cached"]
    _assert_tables_complete(batched_run)


def test_per_sequence_tables_of_the_earlier_layout_are_moved_into_parts(batched_run: Config) -> None:
    tables = landmark_tables(batched_run)
    from stages.preprocess.landmark_table import write_landmark_table

    for sid in ("face_000", "face_001"):
        write_landmark_table(tables.read(sid), tables.folder / f"{sid}.parquet")
    summary = run_preprocess(batched_run)
    assert summary.done == 0
    assert sorted(p.name for p in tables.folder.iterdir() if not PART_RE.fullmatch(p.name)) == []
    _assert_tables_complete(batched_run)


@pytest.mark.slow
def test_kill_9_mid_run_loses_nothing_and_redoes_nothing(crops_root: Path, tmp_path: Path, batched_run: Config) -> None:
    """Killed with SIGKILL once a batch's part is written, then re-run: the finished batches are not redone and the
    records and tables end as an uninterrupted run's."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "pipeline.cli", "preprocess", str(REPO / "configs" / "ck48.yaml")]
    for kv in (f"data.root={crops_root}", "data.name_pattern=^(?P<subject>.+)$", "data.folds=2", f"output_dir={out}"):
        args += ["--set", kv]
    args += ["--set", "ray.workers=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    folder = out / "preprocess" / "landmarks"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if folder.is_dir() and any(PART_RE.fullmatch(p.name) for p in folder.iterdir()):
            break
        time.sleep(0.02)
    killed_mid_run = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_mid_run, "the run finished before it could be killed"
    written = {sid for part in folder.iterdir() if PART_RE.fullmatch(part.name) for sid in part_keys(part)}
    assert 0 < len(written) < N_FACES + 1
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cfg = _config(crops_root, out)
    index = _index(cfg)
    assert index.loc[sorted(written), "cached"].all()  # what was finished is not redone
    _assert_tables_complete(cfg)
    reference = _records(batched_run)
    for sid, rec in _records(cfg).items():
        if rec is not None:
            np.testing.assert_array_equal(rec.aligned, reference[sid].aligned)
            np.testing.assert_array_equal(rec.trajectory, reference[sid].trajectory)


def test_a_worker_writes_its_batch_without_pandas(crops_root: Path, tmp_path: Path) -> None:
    """A preprocess worker's start is on the critical path of every preprocess command (both workers start at
    once, on the cores that then do the work): in a fresh process, building a worker and processing a batch of
    one-image items (faces and a flat image) into the cache and one landmark-table part loads no pandas (~0.3 s
    of imports). pandas is for reading tables and CSV copies, which a worker never does."""
    faces = sorted(str(p) for p in (crops_root / "happy").iterdir())[:3] + [str(crops_root / "anger" / "flat_000.png")]
    script = f"""
import sys
from pipeline.config import load_config
from pipeline.preprocess.to_stages import sequence_config
from pipeline.preprocess.worker import PreprocessWorker
from stages.preprocess.decode import SequenceSource
seq_cfg = sequence_config(load_config({str(REPO / "configs" / "ck48.yaml")!r}, [])).model_dump(mode="json")
worker = PreprocessWorker(seq_cfg, {str(tmp_path / "cache")!r}, {str(tmp_path / "tables")!r}, None)
sources = [SequenceSource(f"s{{i}}", frame_paths=(p,)) for i, p in enumerate({faces!r})]
result = worker.process_batch("part-000001-000000.parquet", sources, False)
print([str(row["status"]) for row in result["rows"]])
print("pandas" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert out[-2] == "['ok', 'ok', 'ok', 'no_face']"
    assert out[-1] == "False"
    assert set(part_keys(tmp_path / "tables" / "part-000001-000000.parquet")) == {"s0", "s1", "s2", "s3"}
