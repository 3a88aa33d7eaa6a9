"""Landmark tables many sequences to a file (stages.preprocess.landmark_store) and the batches that write them
(pipeline.preprocess.dispatch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.preprocess.dispatch import BATCH_FRAMES, make_batches
from stages.errors import StageError
from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmark_store import LandmarkTables, SequenceTable, part_keys, part_name, write_part
from stages.preprocess.landmark_table import COLUMNS, landmark_columns, landmark_table, write_landmark_table
from stages.record import LandmarkArrays


def _table(sequence_id: str, n: int, seed: int = 0, key: str = "k") -> SequenceTable:
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    if n > 1:
        ok[1] = False
    pts = np.round(rng.random((n, 68, 2)) * 48).astype(np.float32)
    lm = LandmarkArrays(idx, idx / 30.0, pts, ok, np.where(ok, 0.9, 0.0).astype(np.float32))
    return SequenceTable(sequence_id, key, lm)


def _expected(t: SequenceTable) -> pd.DataFrame:
    return pd.DataFrame(landmark_columns(t.sequence_id, *_args(t)), columns=COLUMNS)


def test_a_part_holds_many_sequences_each_readable_alone(tmp_path: Path) -> None:
    tables = [_table(f"s{i}", n, seed=i, key=f"key{i}") for i, n in enumerate([1, 3, 1, 5])]
    path = write_part(tmp_path, part_name(1, 0), tables)
    assert path == tmp_path / "part-000001-000000.parquet"
    assert part_keys(path) == {f"s{i}": f"key{i}" for i in range(4)}
    store = LandmarkTables(tmp_path)
    for t in tables:
        back = store.read(t.sequence_id)
        pd.testing.assert_frame_equal(back, _expected(t), check_dtype=True, check_column_type=False)
    assert store.key_of("s3") == "key3" and store.key_of("absent") is None
    with pytest.raises(StageError, match="no landmark table"):
        store.read("absent")
    # a plain Parquet reader opens the folder as one dataset and filters a sequence
    whole = pd.read_parquet(tmp_path, filters=[("sequence_id", "==", "s1")])
    assert len(whole) == 3 and (whole["frame"].to_numpy() == [1, 2, 3]).all()


def test_nothing_to_write_writes_nothing(tmp_path: Path) -> None:
    assert write_part(tmp_path, part_name(1, 0), []) is None
    assert not list(tmp_path.iterdir())


def test_a_newer_part_replaces_a_sequence_and_drop_stale_leaves_each_once(tmp_path: Path) -> None:
    write_part(tmp_path, part_name(1, 0), [_table("a", 2, 0, "old"), _table("b", 1, 1, "b")])
    write_part(tmp_path, part_name(1, 1), [_table("c", 1, 2, "c")])
    store = LandmarkTables(tmp_path)
    assert store.next_run() == 2
    write_part(tmp_path, part_name(2, 0), [_table("a", 4, 3, "new"), _table("c", 1, 4, "c2")])
    store.refresh()
    assert store.key_of("a") == "new" and len(store.read("a")) == 4  # the newest part wins before any clean-up
    assert store.drop_stale() == 2  # part 1-0 rewritten without a, part 1-1 deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000001-000000.parquet", "part-000002-000000.parquet"]
    assert part_keys(tmp_path / "part-000001-000000.parquet") == {"b": "b"}
    everything = pd.read_parquet(tmp_path)
    assert everything.groupby("sequence_id").size().to_dict() == {"a": 4, "b": 1, "c": 1}
    assert store.drop_stale() == 0


def test_an_unreadable_part_holds_nothing_and_is_dropped(tmp_path: Path) -> None:
    write_part(tmp_path, part_name(1, 0), [_table("a", 1)])
    (tmp_path / part_name(1, 1)).write_bytes(b"PAR1 truncated")
    store = LandmarkTables(tmp_path)
    assert set(store.scan()) == {"a"}
    assert store.drop_stale() == 1 and not (tmp_path / part_name(1, 1)).exists()


def test_per_sequence_files_of_the_earlier_layout_are_read_then_replaced(tmp_path: Path) -> None:
    old = _table("S005/001", 3)
    legacy = tmp_path / "S005" / "001.parquet"
    write_landmark_table(landmark_table("S005/001", *_args(old)), legacy, csv=True)
    store = LandmarkTables(tmp_path)
    assert store.key_of("S005/001") is None  # not current: a run rewrites it into a part
    assert len(store.read("S005/001")) == 3
    write_part(tmp_path, part_name(1, 0), [old])
    assert store.drop_stale() == 2 and not legacy.exists() and not legacy.with_suffix(".csv").exists()
    assert len(store.read("S005/001")) == 3


def _args(t: SequenceTable) -> tuple:
    lm = t.landmarks
    return lm.frame_indices, lm.timestamps, lm.confidence, lm.success, lm.landmarks


def test_csv_copies_go_to_their_own_folder_and_follow_the_parts(tmp_path: Path) -> None:
    folder, csv = tmp_path / "landmarks", tmp_path / "landmarks_csv"
    write_part(folder, part_name(1, 0), [_table("a", 2), _table("b", 1)], csv)
    write_part(folder, part_name(2, 0), [_table("a", 2, 5)], csv)
    assert sorted(p.name for p in csv.iterdir()) == ["part-000001-000000.csv", "part-000002-000000.csv"]
    LandmarkTables(folder).drop_stale(csv)
    assert pd.read_csv(csv / "part-000001-000000.csv")["sequence_id"].tolist() == ["b"]
    assert pd.read_parquet(folder).groupby("sequence_id").size().to_dict() == {"a": 2, "b": 1}


def _sources(n: int, frames: int = 1, video: bool = False) -> list[SequenceSource]:
    return [
        SequenceSource(
            sequence_id=f"s{i}",
            frame_paths=() if video else tuple(f"f{i}_{k}.png" for k in range(frames)),
            video_path=f"v{i}.mp4" if video else None,
        )
        for i in range(n)
    ]


def test_one_image_items_are_batched_and_videos_go_alone() -> None:
    many = _sources(10_000)
    batches = make_batches(many, n_workers=2, run=3)
    # the first four batches ramp up (1/16, 1/8, 1/4, 1/2 of BATCH_FRAMES), the rest are full
    assert [len(group) for _, group in batches] == [16, 32, 64, 128] + [BATCH_FRAMES] * 38 + [32]
    assert [s for _, group in batches for s in group] == many  # every item once, in manifest order
    assert batches[0][0] == "part-000003-000000.parquet" and batches[-1][0] == "part-000003-000042.parquet"
    few = make_batches(_sources(20), n_workers=2, run=1)
    # at least 4 batches per worker: ceil(20 / 8) = 3 sequences a batch, after the ramp
    assert [len(group) for _, group in few] == [1, 1, 1, 1, 3, 3, 3, 3, 3, 1]
    mixed = _sources(2, video=True) + _sources(20) + _sources(1, video=True)
    assert [len(group) for _, group in make_batches(mixed, n_workers=2, run=1)] == [1, 1, 1, 1, *[3] * 6, 1]


@pytest.mark.parametrize(
    "n, frames, expected",
    [
        (360, 17, [1, 1, 3, 7] + [15] * 23 + [3]),  # a CK+-sized set: at most BATCH_FRAMES frames, after the ramp
        (20, 17, [1, 1, 1, 1] + [2] * 8),  # a small run: ceil(340 / 8) = 43 frames a batch, several per worker
        (3, BATCH_FRAMES + 1, [1, 1, 1]),  # a frame list longer than a batch goes alone
    ],
)
def test_frame_lists_are_batched_by_their_frames(n: int, frames: int, expected: list[int]) -> None:
    """Sequences of frame files are grouped while a batch's frames stay within the budget, in manifest order."""
    todo = _sources(n, frames=frames)
    batches = make_batches(todo, n_workers=2, run=1)
    assert [len(group) for _, group in batches] == expected
    assert [s for _, group in batches for s in group] == todo
    assert all(sum(len(s.frame_paths) for s in group) <= max(BATCH_FRAMES, frames) for _, group in batches)
