"""The per-item fast paths of preprocessing give exactly what the plain ones gave: cache keys spliced from a config
serialised once (bit-identical to hashing the full parts, so existing caches stay valid), manifest rows read from
column arrays, a batch's landmark tables built in one call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.preprocess.to_stages import source_from_row, sources_from_manifest
from stages.preprocess.cache import source_fingerprint, stable_hash, stage_keys
from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmark_store import SequenceTable, part_columns
from stages.preprocess.landmark_table import COLUMNS, landmark_columns
from stages.preprocess.sequence import SequenceConfig, SequenceProcessor, sequence_keys
from stages.preprocess.sequence_keys import CHECKED_PROVIDED, VIDEO_TIMES, KeyMaker
from stages.record import LandmarkArrays

CONFIGS = {
    "default": {},
    "ck48": {
        "align": {"size": 96, "color": "grey", "face_scale": 0.51, "vertical_offset": 0.40},
        "trajectory": {"normalise": "procrustes", "reference": "none", "length": 16},
    },
    "provided_rgb": {
        "landmarks": {"backend": "provided"},
        "align": {"color": "rgb"},
        "frames": {"mode": "uniform", "n": 8, "max_pixels": 1000},
    },
}


def _reference_keys(source: SequenceSource, cfg: SequenceConfig) -> dict[str, str]:
    """The keys as they were made before the fast path: :func:`stable_hash` over the full parts of each level."""
    fingerprint = source_fingerprint(list(source.frame_paths), source.video_path)
    frames: tuple = (cfg.frames.model_dump(mode="json", exclude={"max_pixels"}), source.peak_index)
    landmarks: tuple = (cfg.landmarks, cfg.align.color)
    if source.video_path is not None:
        frames += (VIDEO_TIMES,)
    if cfg.landmarks.backend == "provided":
        landmarks += (CHECKED_PROVIDED,)
    lk = stable_hash("landmarks", fingerprint, frames, landmarks)
    ak = stable_hash("aligned", lk, cfg.align)
    return {"landmarks": lk, "aligned": ak, "trajectory": stable_hash("trajectory", ak, cfg.trajectory)}


def _sources(tmp_path) -> list[SequenceSource]:
    frames = []
    for i in range(3):
        path = tmp_path / f"f {i} é.png"
        path.write_bytes(b"x" * (i + 1))
        frames.append(str(path))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not a video")
    return [
        SequenceSource("one", frame_paths=(frames[0],)),
        SequenceSource(
            "three", frame_paths=tuple(frames), peak_index=1, landmark_paths=(str(tmp_path / "a.txt"), "", "")
        ),
        SequenceSource("missing", frame_paths=(str(tmp_path / "gone.png"),), peak_index=np.int64(0)),
        SequenceSource("video", video_path=str(video)),
        SequenceSource("video_peak", video_path=str(video), peak_index=7),
        SequenceSource("no_video", video_path=str(tmp_path / "gone.mp4")),
    ]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_spliced_keys_equal_the_full_hash(tmp_path, name):
    cfg = SequenceConfig.model_validate(CONFIGS[name])
    maker, processor = KeyMaker(cfg), SequenceProcessor(cfg)
    for source in _sources(tmp_path):
        expected = _reference_keys(source, cfg)
        assert maker.keys(source) == expected, source.sequence_id
        assert sequence_keys(source, cfg) == expected
        assert processor.keys(source) == expected


def test_stage_keys_equal_the_full_hash():
    fingerprint = {"video": None, "frames": {"count": 2, "sha256": "ab"}}
    parts = (fingerprint, ({"mode": "all", "fps": 30.0}, None), ("cfg", "grey"), {"size": 96}, {"length": 16})
    lk = stable_hash("landmarks", *parts[:3])
    ak = stable_hash("aligned", lk, parts[3])
    assert stage_keys(*parts) == {"landmarks": lk, "aligned": ak, "trajectory": stable_hash("trajectory", ak, parts[4])}


def test_a_processor_follows_a_new_config(tmp_path):
    source = _sources(tmp_path)[0]
    processor = SequenceProcessor(SequenceConfig())
    before = processor.keys(source)
    processor.cfg = SequenceConfig.model_validate(CONFIGS["ck48"])
    assert processor.keys(source) == _reference_keys(source, processor.cfg) != before


def test_sources_from_manifest_equal_source_from_row():
    df = pd.DataFrame(
        {
            "sequence_id": ["a", "b", "c", 4],
            "frame_paths": [["/x/1.png", "/x/2.png"], [], None, ["/y.png"]],
            "video_path": [np.nan, "/v.mp4", None, np.nan],
            "peak_index": [1.0, np.nan, 3.0, np.nan],
            "landmark_paths": [["/x/1.txt", ""], None, [], None],
        }
    )
    expected = [source_from_row(row) for _, row in df.iterrows()]
    assert sources_from_manifest(df) == expected
    # without the optional columns (iterrows would turn the None cell into NaN: compare with the row dicts)
    fewer = df.drop(columns=["landmark_paths", "peak_index"])
    assert sources_from_manifest(fewer) == [source_from_row(row) for row in fewer.to_dict("records")]


def _landmarks(n: int, seed: int) -> LandmarkArrays:
    rng = np.random.default_rng(seed)
    ok = rng.random(n) > 0.3
    return LandmarkArrays(
        frame_indices=np.arange(n, dtype=np.int64) * 2,
        timestamps=np.arange(n) / 30.0,
        landmarks=(rng.random((n, 68, 2)) * 48).astype(np.float32).reshape(-1, 68, 2),
        success=ok,
        confidence=np.where(ok, 0.9, 0.0).astype(np.float32),
    )


def test_part_columns_equal_a_table_per_sequence():
    tables = [SequenceTable(s, f"k{s}", _landmarks(n, i)) for i, (s, n) in enumerate([("a", 1), ("b", 0), ("c", 3)])]
    joined = part_columns(tables)
    per_sequence = []
    for t in tables:
        lm = t.landmarks
        per_sequence.append(
            landmark_columns(t.sequence_id, lm.frame_indices, lm.timestamps, lm.confidence, lm.success, lm.landmarks)
        )
    assert list(joined) == COLUMNS
    for column in COLUMNS:
        expected = np.concatenate([t[column] for t in per_sequence])
        assert joined[column].dtype == expected.dtype, column
        np.testing.assert_array_equal(joined[column], expected)
