"""The resumable array cache, its keys and record (de)serialisation (stages.preprocess.cache)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.preprocess.align import AlignConfig
from stages.preprocess.cache import (
    ArrayCache,
    _host,
    record_from_arrays,
    record_to_arrays,
    source_fingerprint,
    stable_hash,
    stage_keys,
)
from stages.preprocess.cache_format import encode_entry
from stages.preprocess.decode import SequenceSource
from stages.preprocess.sequence import SequenceConfig, SequenceProcessor, sequence_keys
from stages.preprocess.trajectory import TrajectoryConfig
from stages.record import LandmarkArrays, SequenceRecord, SequenceStatus


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "landmarks": rng.random((5, 68, 2)).astype(np.float32),
        "aligned": rng.integers(0, 255, (5, 16, 16), dtype=np.uint8),
        "success": np.array([True, False, True, True, False]),
        "frame_indices": np.arange(5, dtype=np.int64),
        "empty": np.zeros((0, 68, 2), dtype=np.float32),
        "name": np.array("S005_001"),
    }


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


# --- keys -------------------------------------------------------------------------------------------------


def test_stable_hash_is_canonical():
    key = stable_hash({"b": 1, "a": [1, 2]}, "x")
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)
    assert key == stable_hash({"a": [1, 2], "b": 1}, "x")  # key order does not matter
    assert key == stable_hash({"a": (1, 2), "b": np.int64(1)}, "x")  # tuples and numpy scalars are plain
    assert key != stable_hash({"a": [1, 2], "b": 2}, "x")
    assert key != stable_hash("x", {"a": [1, 2], "b": 1})  # order of parts matters
    assert stable_hash(Path("/a/b")) == stable_hash("/a/b")
    cfg = AlignConfig(size=64)
    assert stable_hash(cfg) == stable_hash(cfg.model_dump(mode="json")) == stable_hash(AlignConfig(size=64))
    assert stable_hash(cfg) != stable_hash(AlignConfig(size=65))


def test_stable_hash_is_the_same_in_another_process():
    code = "from stages.preprocess.cache import stable_hash; print(stable_hash({'b': 1.5, 'a': 'x'}, [1, 2]))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert out.stdout.strip() == stable_hash({"a": "x", "b": 1.5}, [1, 2])


def test_stable_hash_refuses_unknown_objects():
    with pytest.raises(TypeError):
        stable_hash(object())


def test_source_fingerprint_follows_the_files(tmp_path):
    frames = [tmp_path / f"{i:03d}.png" for i in range(3)]
    for f in frames:
        f.write_bytes(b"abc")
    fp = source_fingerprint([str(f) for f in frames], None)
    assert fp == source_fingerprint(frames, None)  # str or Path
    assert fp["frames"]["count"] == 3 and fp["video"] is None
    frames[1].write_bytes(b"abcd")  # size changes
    fp2 = source_fingerprint(frames, None)
    assert fp2 != fp
    os.utime(frames[2], ns=(1_000_000_000, 1_000_000_000))  # mtime changes, same size
    assert source_fingerprint(frames, None) != fp2
    assert source_fingerprint(frames[:2], None) != source_fingerprint(frames, None)
    missing = source_fingerprint([tmp_path / "nope.png"], tmp_path / "nope.mp4")  # no exception
    assert missing["video"][1:] == [-1, -1]
    video = tmp_path / "v.mp4"
    video.write_bytes(b"0" * 10)
    assert source_fingerprint([], video)["video"] == [str(video), 10, video.stat().st_mtime_ns]


def test_stage_keys_change_exactly_what_a_setting_affects():
    fp = {"video": ["/v.mp4", 10, 5], "frames": {"count": 0, "sha256": "x"}}
    base = dict(
        fingerprint=fp,
        frames={"mode": "all"},
        landmarks={"backend": "dlib"},
        align=AlignConfig(),
        trajectory=TrajectoryConfig(),
    )
    k0 = stage_keys(**base)
    assert len(set(k0.values())) == 3

    def changed(**kw) -> set[str]:
        k = stage_keys(**{**base, **kw})
        return {level for level in k0 if k[level] != k0[level]}

    assert changed(trajectory=TrajectoryConfig(length=32)) == {"trajectory"}
    assert changed(align=AlignConfig(size=64)) == {"aligned", "trajectory"}
    assert changed(landmarks={"backend": "fan"}) == {"landmarks", "aligned", "trajectory"}
    assert changed(frames={"mode": "last"}) == {"landmarks", "aligned", "trajectory"}
    assert changed(fingerprint={**fp, "video": ["/v.mp4", 11, 5]}) == {"landmarks", "aligned", "trajectory"}
    assert changed(trajectory=TrajectoryConfig()) == set()


# --- ArrayCache -------------------------------------------------------------------------------------------


def test_round_trip_with_meta(tmp_path):
    cache = ArrayCache(tmp_path, "landmarks")
    key = stable_hash("k")
    assert cache.get(key) is None and not cache.has(key) and cache.stats["misses"] == 1
    arrays = _arrays()
    path = cache.put(key, arrays, {"sequence_id": "S005_001", "n": 5})
    assert path == tmp_path / "landmarks" / key[:2] / f"{key}.npz" and cache.has(key)
    _assert_same(cache.get(key), arrays)
    entry = cache.load(key)
    assert entry.meta == {"sequence_id": "S005_001", "n": 5}
    assert cache.stats["hits"] == 2 and cache.stats["corrupt"] == 0
    assert list(cache.keys()) == [key]
    # a second instance (another process, a later run) sees it too
    _assert_same(ArrayCache(tmp_path, "landmarks").get(key), arrays)
    # overwrite
    cache.put(key, {"x": np.ones(3)})
    _assert_same(cache.get(key), {"x": np.ones(3)})


def test_pickle_is_refused(tmp_path):
    cache = ArrayCache(tmp_path, "ns")
    with pytest.raises(TypeError, match="object"):
        cache.put("ab12", {"bad": np.array([{"a": 1}, None], dtype=object)})
    assert not cache.has("ab12")
    assert not list((tmp_path / "ns").rglob("*.tmp"))  # nothing half-written left behind


@pytest.mark.parametrize("name", ["__meta__", "__x", "file", "allow_pickle", "a/b", ""])
def test_reserved_or_odd_array_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError):
        ArrayCache(tmp_path, "ns").put("ab12", {name: np.ones(2)})


def test_bad_keys_are_refused(tmp_path):
    cache = ArrayCache(tmp_path, "ns")
    for key in ["../x", "a", "a.b", ""]:
        with pytest.raises(ValueError):
            cache.path(key)


def _corrupt_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a writer "killed" half way through (non-atomic copy)


def _corrupt_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the landmarks array's bytes
    path.write_bytes(bytes(data))


def _corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"not a zip at all")


def _corrupt_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"x": 1}))  # never unpickled


def _corrupt_missing_checksum(path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, landmarks=np.zeros(3))  # a valid npz, but not one the cache wrote


def _corrupt_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "damage",
    [_corrupt_truncate, _corrupt_flip, _corrupt_garbage, _corrupt_pickle, _corrupt_missing_checksum, _corrupt_empty],
)
def test_damaged_entries_are_detected_deleted_and_recomputed(tmp_path, damage):
    cache = ArrayCache(tmp_path, "aligned")
    key = stable_hash("seq")
    path = cache.put(key, _arrays())
    damage(path)
    assert cache.get(key) is None
    assert cache.stats["corrupt"] == 1 and not path.exists()
    cache.put(key, _arrays(1))  # the caller recomputes
    _assert_same(cache.get(key), _arrays(1))


def test_checksum_catches_a_swapped_array(tmp_path):
    """A well-formed entry whose content does not match its checksum (e.g. a partial rewrite)."""
    import struct
    import zlib

    cache = ArrayCache(tmp_path, "ns")
    path = cache.put("ab12", {"a": np.zeros(4)})
    data = path.read_bytes()
    (head_len,) = struct.unpack_from("<I", data, 4)
    assert data[8 + head_len :] == np.zeros(4).tobytes()  # 32 bytes: stored raw
    path.write_bytes(data[: 8 + head_len] + np.ones(4).tobytes())
    assert cache.get("ab12") is None and cache.stats["corrupt"] == 1
    header = json.loads(zlib.decompress(data[8 : 8 + head_len]))
    assert header["format"] == 2 and [a[:4] for a in header["arrays"]] == [["a", "<f8", [4], "raw"]]


def _legacy_entry(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """An entry as format 1 wrote it: an np.savez archive with __meta__, __format__ and __checksum__."""
    import hashlib

    from stages.preprocess.cache_format import canonical_json

    data = {**arrays, "__meta__": np.array(canonical_json(meta))}
    h = hashlib.sha256()
    for name in sorted(data):
        a = np.ascontiguousarray(data[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **data, __format__=np.array(1, dtype=np.int64), __checksum__=np.array(h.hexdigest()))


def test_entries_of_format_1_are_still_read_and_checked(tmp_path):
    cache = ArrayCache(tmp_path, "aligned")
    _legacy_entry(cache.path("ab12"), _arrays(), {"sequence_id": "S005_001"})
    entry = cache.load("ab12")
    _assert_same(entry.arrays, _arrays())
    assert entry.meta == {"sequence_id": "S005_001"} and cache.stats["corrupt"] == 0
    swapped = {**_arrays(), "landmarks": np.zeros((5, 68, 2), np.float32)}
    _legacy_entry(cache.path("cd34"), _arrays(), {})
    with np.load(cache.path("cd34")) as z:
        parts = {k: z[k] for k in z.files}
    with open(cache.path("cd34"), "wb") as fh:
        np.savez(fh, **{**parts, "landmarks": swapped["landmarks"]})
    assert cache.get("cd34") is None and cache.stats["corrupt"] == 1


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8),  # grey crops: PNG
        np.random.default_rng(1).integers(0, 255, (2, 40, 40, 3), dtype=np.uint8),  # colour crops: PNG
        np.zeros((0, 96, 96), np.uint8),  # no frames
        np.repeat(np.arange(2 * 68 * 2, dtype=np.float32).reshape(2, 68, 2), 8, axis=0),  # deflates
        np.random.default_rng(2).random((3, 68, 2)).astype(np.float32),  # does not deflate: raw
        np.array([True, False]),
        np.array("S005/001"),
        np.array(7, dtype=np.int64),
    ],
)
def test_every_codec_round_trips_bit_for_bit(tmp_path, array):
    cache = ArrayCache(tmp_path, "ns")
    cache.put("ab12", {"x": array})
    _assert_same(cache.get("ab12"), {"x": array})


def test_crops_and_repeated_frames_are_stored_compactly(tmp_path):
    """The per-item costs of a one-image dataset: an aligned 96x96 crop (smooth, like a real face) as PNG, a
    trajectory resampled from one frame deflated."""
    from stages.preprocess.cache_format import PNG_ROWS

    y, x = np.mgrid[0:96, 0:96]
    crop = (128 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)).astype(np.uint8)[None]
    cache = ArrayCache(tmp_path, "ns")
    assert cache.put("ab12", {"aligned": crop}).stat().st_size < crop.nbytes / 2
    trajectory = np.repeat(np.random.default_rng(0).random((1, 68, 2)).astype(np.float32), 16, axis=0)
    assert cache.put("cd34", {"trajectory": trajectory}).stat().st_size < trajectory.nbytes / 8
    long = np.random.default_rng(3).integers(0, 255, (PNG_ROWS // 96 + 3, 96, 96), dtype=np.uint8)  # 2 PNG chunks
    cache.put("ef56", {"aligned": long})
    _assert_same(cache.get("ef56"), {"aligned": long})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path):
    cache = ArrayCache(tmp_path, "trajectory")
    key = stable_hash("seq")
    cache.put(key, _arrays())
    shard = cache.path(key).parent
    dead = shard / f".{key}.{_host()}.{_dead_pid()}.deadbeef.tmp"  # a writer killed mid-write
    dead.write_bytes(b"PK\x03\x04 half")
    alive = shard / f".{key}.{_host()}.{os.getpid()}.cafecafe.tmp"  # a writer still at work
    alive.write_bytes(b"PK\x03\x04 half")
    old = shard / f".{key}.otherhost.123.abcdabcd.tmp"  # another machine's, 2 hours old
    old.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    other = shard / f".{key}.otherhost.123.abcdabce.tmp"  # another machine's, recent: may be writing
    other.write_bytes(b"x")

    assert list(cache.keys()) == [key]  # temp files are not entries
    _assert_same(cache.get(key), _arrays())  # and are never read
    fresh = ArrayCache(tmp_path, "trajectory")  # a new run cleans up
    assert fresh.stats["temp_cleaned"] == 2
    assert not dead.exists() and not old.exists() and alive.exists() and other.exists()


def _writer(root: str, key: str, value: int, n: int) -> None:
    cache = ArrayCache(Path(root), "ns")
    for _ in range(n):
        cache.put(key, {"v": np.full((64, 1024), value, dtype=np.int32)}, {"writer": value})


def test_concurrent_puts_of_one_key_leave_a_valid_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    key = stable_hash("shared")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), key, v, 25)) for v in (1, 2)]
    for p in procs:
        p.start()
    reader = ArrayCache(tmp_path, "ns")
    seen = 0
    while any(p.is_alive() for p in procs):
        # a reader racing the writers may find a new entry half written (it is written in place): it rejects it,
        # and never returns a broken one
        got = reader.load(key)
        if got is not None:
            assert got.meta["writer"] in (1, 2) and (got.arrays["v"] == got.meta["writer"]).all()
            seen += 1
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    entry = reader.load(key)  # a whole entry, or none when the reader deleted a half-written one under a writer
    assert entry is None or (entry.arrays["v"] == entry.meta["writer"]).all()
    assert not list((tmp_path / "ns").rglob("*.tmp"))
    _writer(str(tmp_path), key, 3, 1)  # made again
    assert reader.load(key).meta["writer"] == 3
    print(f"reader loaded {seen} entries while the writers ran, rejected {reader.stats['corrupt']} half-written")


def test_a_new_entry_is_written_in_place_and_an_old_one_replaced_whole(tmp_path, monkeypatch):
    """``write_verified``: a new file is created in place (no temp file, no rename), an existing one is replaced
    by the atomic rename, a failed write leaves no partial file, and a missing folder is made."""
    from stages.atomic_io import write_verified

    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append(str(b)) or real_replace(a, b))
    path = tmp_path / "new" / "shard" / "entry.bin"
    write_verified(path, b"first")
    assert path.read_bytes() == b"first" and renames == []
    write_verified(path, b"second")
    assert path.read_bytes() == b"second" and renames == [str(path)]
    failing = tmp_path / "new" / "shard" / "failing.bin"
    with pytest.raises(TypeError):
        write_verified(failing, "not bytes")  # type: ignore[arg-type]
    assert not failing.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["entry.bin"]  # no temp file left


def test_an_entry_cut_short_by_a_killed_writer_is_rejected_and_made_again(tmp_path):
    cache = ArrayCache(tmp_path, "landmarks")
    key = stable_hash("killed")
    content = encode_entry({"x": np.arange(1000)}, {})
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_bytes(content[: len(content) // 3])  # what an in-place write killed a third through leaves
    assert cache.get(key) is None and cache.stats["corrupt"] == 1 and not cache.path(key).exists()
    cache.put(key, {"x": np.arange(1000)})
    assert cache.get(key)["x"].tolist() == list(range(1000))


def test_clear_removes_only_its_namespace(tmp_path):
    a, b = ArrayCache(tmp_path, "a"), ArrayCache(tmp_path, "b")
    a.put("ab12", {"x": np.ones(1)})
    b.put("ab12", {"x": np.ones(1)})
    a.clear()
    assert not a.has("ab12") and b.has("ab12")
    a.put("ab12", {"x": np.ones(1)})  # still usable
    assert a.has("ab12")


# --- records ----------------------------------------------------------------------------------------------


def _record() -> SequenceRecord:
    rng = np.random.default_rng(0)
    lm = rng.random((4, 68, 2)).astype(np.float32)
    lm[2] = np.nan
    return SequenceRecord(
        sequence_id="S010/002",
        frame_indices=np.array([0, 3, 6, 9]),
        timestamps=np.array([0.0, 0.1, 0.2, 0.3]),
        landmarks=lm,
        success=np.array([True, True, False, True]),
        confidence=np.array([0.9, 0.8, 0.0, 0.95], dtype=np.float32),
        aligned=rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
        aligned_landmarks=lm * 2,
        trajectory=rng.random((16, 68, 2)).astype(np.float32),
        status="ok",
        detail="",
        meta={"label": 3, "subject": "S010"},
    )


def test_record_round_trip_through_the_cache(tmp_path):
    rec = _record()
    cache = ArrayCache(tmp_path, "records")
    cache.put("ab12", record_to_arrays(rec))
    back = record_from_arrays(cache.get("ab12"))
    assert back.sequence_id == rec.sequence_id and back.status == "ok" and back.meta == rec.meta
    for name in [
        "frame_indices",
        "timestamps",
        "landmarks",
        "success",
        "confidence",
        "aligned",
        "aligned_landmarks",
        "trajectory",
    ]:
        a, b = getattr(rec, name), getattr(back, name)
        assert b.shape == a.shape, name
        np.testing.assert_array_equal(a, b)
    assert back.frame_indices.dtype == np.int64 and back.success.dtype == bool and back.n_frames == 4


def test_failed_record_round_trip():
    rec = _record()
    rec.status, rec.detail = "no_face", "no face in any of 4 frames"
    rec.trajectory = np.zeros((0, 68, 2), dtype=np.float32)
    back = record_from_arrays(record_to_arrays(rec))
    assert (back.status, back.detail) == ("no_face", "no face in any of 4 frames")
    assert back.trajectory.shape == (0, 68, 2)


# --- the landmarks level ----------------------------------------------------------------------------------

LANDMARKS_LEVEL = {  # what the landmarks level has held since cache format 1: name -> (dtype, shape after T)
    "frame_indices": (np.int64, ()),
    "timestamps": (np.float64, ()),
    "landmarks": (np.float32, (68, 2)),
    "success": (np.bool_, ()),
    "confidence": (np.float32, ()),
}


def test_landmark_arrays_are_the_landmarks_level_names_unconverted():
    rec = _record()
    lm = LandmarkArrays.from_arrays({**record_to_arrays(rec), "unrelated": np.zeros(3)})
    arrays = lm.to_arrays()
    assert list(arrays) == list(LANDMARKS_LEVEL)
    for name in LANDMARKS_LEVEL:  # the very arrays handed in: nothing copied or cast on the way
        assert arrays[name] is getattr(lm, name)
    np.testing.assert_array_equal(lm.landmarks, rec.landmarks)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lm.success = np.ones(4, bool)
    with pytest.raises(KeyError, match="confidence"):
        LandmarkArrays.from_arrays({k: v for k, v in arrays.items() if k != "confidence"})


def _first_demo_sequence(root: Path) -> SequenceSource:
    folder = sorted(p for p in (root / "cohn-kanade-images").glob("S*/*") if p.is_dir())[0]
    return SequenceSource("seq", tuple(str(p) for p in sorted(folder.glob("*.png"))))


def test_a_landmarks_entry_in_the_plain_array_layout_is_written_and_reused(tiny_demo: Path, tmp_path: Path):
    source = _first_demo_sequence(tiny_demo)
    cfg = SequenceConfig(trajectory=TrajectoryConfig(length=8))
    first = SequenceProcessor(cfg, tmp_path).process(source)
    assert first.status == "ok" and not first.cached
    key = sequence_keys(source, cfg)["landmarks"]
    cache = ArrayCache(tmp_path, "landmarks")
    stored = cache.get(key)  # the arrays of the entry, as stored
    assert set(stored) == set(LANDMARKS_LEVEL)
    n = len(stored["success"])
    for name, (dtype, tail) in LANDMARKS_LEVEL.items():
        assert stored[name].dtype == dtype and stored[name].shape == (n, *tail), name

    # An entry as a writer of plain dicts puts it (what the cache held before LandmarkArrays), with a marked
    # confidence: a new processor reads it back as is instead of recomputing it.
    old = {name: np.asarray(stored[name]) for name in LANDMARKS_LEVEL}
    old["confidence"] = np.full(n, 0.25, np.float32)
    cache.put(key, old, {"sequence_id": source.sequence_id})
    again = SequenceProcessor(cfg, tmp_path).process(source)
    assert again.cached and again.status == "ok"
    np.testing.assert_array_equal(again.landmark_arrays.confidence, old["confidence"])
    np.testing.assert_array_equal(again.record.confidence, old["confidence"])
    for name in ("frame_indices", "timestamps", "landmarks", "success"):
        np.testing.assert_array_equal(getattr(again.landmark_arrays, name), getattr(first.landmark_arrays, name))
    np.testing.assert_array_equal(again.record.trajectory, first.record.trajectory)


# --- statuses ---------------------------------------------------------------------------------------------


def test_statuses_are_written_and_read_back_as_their_plain_strings(tmp_path: Path):
    statuses = list(SequenceStatus)
    values = [s.value for s in statuses]
    df = pd.DataFrame({"status": statuses})
    df.to_parquet(tmp_path / "index.parquet")
    df.to_csv(tmp_path / "failures.csv", index=False)
    assert pd.read_parquet(tmp_path / "index.parquet")["status"].tolist() == values
    assert (tmp_path / "failures.csv").read_text().split() == ["status", *values]
    assert json.loads(json.dumps({"status": statuses})) == {"status": values}
    assert [f"{s}" for s in statuses] == [str(s) for s in statuses] == [f"{s: <1}" for s in statuses] == values
    assert np.array(SequenceStatus.NO_FACE).tobytes() == np.array("no_face").tobytes()  # a cached record's status
    # strings read back from a file are the members: equal, same hash, found in sets of members, parsed back
    retry = frozenset({SequenceStatus.ERROR, SequenceStatus.TIMEOUT})
    assert "error" in retry and "timeout" in retry and "ok" not in retry and "no_face" == SequenceStatus.NO_FACE
    assert [SequenceStatus(v) for v in values] == statuses
    assert pickle.loads(pickle.dumps(SequenceStatus.LOW_FACE_RATIO)) is SequenceStatus.LOW_FACE_RATIO


def test_entries_skip_fsync_and_run_outputs_keep_it(tmp_path: Path, monkeypatch) -> None:
    """Cache entries are verified on read, so they are written without fsync (a crash costs a recomputation);
    every other atomic write (summaries, indexes, models) is fsynced before its rename."""
    from stages.atomic_io import atomic_write_text

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    cache = ArrayCache(tmp_path, "landmarks")
    cache.put("ab" * 10, {"x": np.arange(3)})
    assert synced == [] and cache.get("ab" * 10)["x"].tolist() == [0, 1, 2]
    atomic_write_text(tmp_path / "summary.json", "{}")
    assert len(synced) >= 1


def test_image_stacks_are_stored_with_one_cheap_png_filter() -> None:
    """Crops are written with PNG's Average filter on every row (where OpenCV lets it be chosen): libpng's own
    choice tries every filter on every row, ~40 % of a CK+-sized frame's cache write. Still lossless."""
    import zlib

    import cv2

    from stages.preprocess.cache_format import decode_entry
    from stages.preprocess.png import png_chunks

    if not hasattr(cv2, "IMWRITE_PNG_FILTER"):
        pytest.skip(f"OpenCV {cv2.__version__} cannot choose a PNG filter: libpng's choice is kept")
    rng = np.random.default_rng(0)
    crops = cv2.GaussianBlur(rng.integers(0, 256, (4 * 32, 32)).astype(np.uint8), (0, 0), 2).reshape(4, 32, 32)
    data = encode_entry({"crops": crops}, {})
    start = data.index(b"\x89PNG")
    png = data[start:]
    idat = b"".join(png[a:b] for kind, a, b in png_chunks(png) if kind == b"IDAT")
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(4 * 32, 1 + 32)
    assert set(rows[:, 0].tolist()) == {3}  # filter type 3: Average
    assert np.array_equal(decode_entry(data).arrays["crops"], crops)
