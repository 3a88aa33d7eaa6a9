"""``landmarks.tight_crops``: small frames taken as face crops skip the detector's search (off by default, and then
no cache key changes)."""

from __future__ import annotations

import numpy as np

from stages.face_geometry import eye_distance
from stages.preprocess.cache import canonical_json
from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmarks import LandmarkConfig, build_landmarker
from stages.preprocess.sequence import SequenceConfig, sequence_keys


def _counting(landmarker) -> list[int]:
    calls = [0]
    detect = landmarker.detector.detect

    def counted(*args, **kwargs):
        calls[0] += 1
        return detect(*args, **kwargs)

    landmarker.detector.detect = counted
    return calls


def test_a_tight_crop_gets_landmarks_without_a_detector_search(tight_crop) -> None:
    crop, truth = tight_crop
    searched = build_landmarker(LandmarkConfig())
    fast = build_landmarker(LandmarkConfig(tight_crops=True))
    searched_calls, fast_calls = _counting(searched), _counting(fast)
    ref, got = searched.detect_frame(crop), fast.detect_frame(crop)
    assert searched_calls[0] == 1 and fast_calls[0] == 0
    assert got.success and got.note == "whole-frame box"
    iod = eye_distance(truth)
    assert np.linalg.norm(got.points - truth, axis=1).mean() / iod < 0.1
    assert np.linalg.norm(got.points - ref.points, axis=1).mean() / iod < 0.1


def test_large_frames_are_still_searched(tight_crop) -> None:
    import cv2

    crop, _ = tight_crop
    big = cv2.resize(crop, (240, 240), interpolation=cv2.INTER_LINEAR)  # above 2 x min_face_px: not a "small" frame
    fast = build_landmarker(LandmarkConfig(tight_crops=True))
    calls = _counting(fast)
    fast.detect_frame(big)
    assert calls[0] >= 1


def test_off_by_default_and_then_absent_from_the_landmarks_key(tmp_path) -> None:
    frame = tmp_path / "f.png"
    frame.write_bytes(b"x")
    source = SequenceSource("s", (str(frame),))
    off, on = SequenceConfig(), SequenceConfig(landmarks=LandmarkConfig(tight_crops=True))
    assert not off.landmarks.tight_crops
    assert sequence_keys(source, off)["landmarks"] != sequence_keys(source, on)["landmarks"]
    # entries made before the setting existed keep their keys: while off it is left out of dumps
    assert "tight_crops" not in canonical_json(off) and "tight_crops" in canonical_json(on)
