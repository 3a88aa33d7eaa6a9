"""``landmarks.small_frame_search``: small frames are searched first at the face-crop scale; the whole upscaled
frame is searched only when nothing is found there ('crop_any', the default) or no normal-strength face
('crop_first'); 'full' searches only the whole upscaled frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from stages.face_geometry import eye_distance
from stages.preprocess.cache import canonical_json
from stages.preprocess.decode import SequenceSource
from stages.preprocess.landmarks import LandmarkConfig, build_landmarker
from stages.preprocess.landmarks.base import Detection
from stages.preprocess.landmarks.tracker import TrackingLandmarker
from stages.preprocess.sequence import SequenceConfig, sequence_keys


def _counting(landmarker) -> list[tuple[int, int]]:
    """Shapes of the images the landmarker's detector is asked to search, in order."""
    calls: list[tuple[int, int]] = []
    detect = landmarker.detector.detect

    def counted(grey, *args, **kwargs):
        calls.append(grey.shape[:2])
        return detect(grey, *args, **kwargs)

    landmarker.detector.detect = counted
    return calls


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean point distance in ``b``'s outer-eye distances."""
    return float(np.linalg.norm(a - b, axis=1).mean() / eye_distance(b))


def test_a_tight_crop_is_found_by_the_crop_scale_search_alone(tight_crop) -> None:
    crop, truth = tight_crop
    full = build_landmarker(LandmarkConfig(small_frame_search="full", whole_frame_fallback=False))
    first = build_landmarker(LandmarkConfig(small_frame_search="crop_first", whole_frame_fallback=False))
    full_calls, first_calls = _counting(full), _counting(first)
    ref, got = full.detect_frame(crop), first.detect_frame(crop)
    assert ref.success and got.success and got.n_faces >= 1, got.note
    # full: the 160 px work image on a 240 px canvas; crop_first: only the 100 px copy on a 150 px canvas
    assert full_calls == [(240, 240)] and first_calls == [(150, 150)]
    assert _mean_distance(got.points, truth) < 0.1
    assert _mean_distance(got.points, ref.points) < 0.05
    assert np.all((got.box[0] > -24, got.box[1] > -24, got.box[2] < 72, got.box[3] < 72)), got.box


@pytest.mark.parametrize("mode", ["crop_first", "crop_any"])
def test_a_face_smaller_than_the_crop_scale_window_is_found_by_the_full_search(mode: str) -> None:
    # the astronaut's face at 0.7x in the middle of a 150 px frame: its detector box is ~0.45 of the side, ~45 px
    # at the crop scale (100 px), too small for dlib's window there, ~72 px in the full search's 160 px work image
    face = cv2.cvtColor(np.ascontiguousarray(astronaut()[20:280, 100:360]), cv2.COLOR_RGB2GRAY)
    s = 0.7
    matrix = np.float32([[s, 0, 75 - 130 * s], [0, s, 75 - 130 * s]])
    frame = cv2.warpAffine(face, matrix, (150, 150), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    full = build_landmarker(LandmarkConfig(small_frame_search="full", whole_frame_fallback=False))
    first = build_landmarker(LandmarkConfig(small_frame_search=mode, whole_frame_fallback=False))
    first_calls = _counting(first)
    ref, got = full.detect_frame(frame), first.detect_frame(frame)
    assert ref.success and ref.n_faces >= 1, ref.note
    assert got.success and got.n_faces >= 1 and got.note == "", got.note
    assert first_calls == [(150, 150), (240, 240)]  # nothing at the crop scale: the full search ran
    assert np.array_equal(got.points, ref.points) and got.box == ref.box  # the full search's face, as with 'full'
    width = got.box[2] - got.box[0]
    assert 0.35 * 150 < width < 0.6 * 150, got.box


def test_large_frames_are_searched_as_before(tight_crop) -> None:
    crop, _ = tight_crop
    big = cv2.resize(crop, (240, 240), interpolation=cv2.INTER_LINEAR)  # above 2 x min_face_px: not "small"
    full = build_landmarker(LandmarkConfig(small_frame_search="full"))
    full_calls = _counting(full)
    ref = full.detect_frame(big)
    for mode in ("crop_first", "crop_any"):
        first = build_landmarker(LandmarkConfig(small_frame_search=mode))
        first_calls = _counting(first)
        got = first.detect_frame(big)
        assert full_calls == first_calls and got.success == ref.success
        assert np.array_equal(got.points, ref.points, equal_nan=True)


def test_the_setting_validates_round_trips_and_keys_the_landmarks(tmp_path) -> None:
    modes = ("crop_any", "crop_first", "full")
    assert LandmarkConfig().small_frame_search == "crop_any"
    with pytest.raises(ValueError):
        LandmarkConfig(small_frame_search="fast")
    for mode in modes:
        cfg = LandmarkConfig(small_frame_search=mode)
        assert LandmarkConfig.model_validate_json(cfg.model_dump_json()) == cfg
        assert LandmarkConfig.model_validate(cfg.model_dump()) == cfg
        # present in dumps either way: entries made by the search before the setting existed are not reused
        assert f'"small_frame_search":"{mode}"' in canonical_json(cfg)
    # a config written before the setting existed still loads, with the default
    old = {k: v for k, v in LandmarkConfig().model_dump().items() if k != "small_frame_search"}
    assert LandmarkConfig.model_validate(old).small_frame_search == "crop_any"

    frame = tmp_path / "f.png"
    frame.write_bytes(b"x")
    source = SequenceSource("s", (str(frame),))
    keys = {
        mode: sequence_keys(source, SequenceConfig(landmarks=LandmarkConfig(small_frame_search=mode))) for mode in modes
    }
    for a, b in (("crop_any", "crop_first"), ("crop_any", "full"), ("crop_first", "full")):
        assert all(keys[a][level] != keys[b][level] for level in keys[a])
    assert keys["crop_any"] == sequence_keys(source, SequenceConfig())


class _StubDetector:
    """Returns the detections listed for each searched canvas size (150: crop scale, 240: full search)."""

    def __init__(self, by_size: dict[int, list[Detection]]) -> None:
        self.by_size = by_size
        self.searched: list[int] = []

    def detect(self, grey: np.ndarray, threshold: float = 0.0) -> list[Detection]:
        self.searched.append(grey.shape[0])
        return list(self.by_size.get(grey.shape[0], []))


@pytest.mark.parametrize(
    "mode, crop, full, searched, expected",
    [
        ("crop_first", "strong", "strong", [150], "crop"),  # a strong face at the crop scale ends the search
        ("crop_first", "weak", "strong", [150, 240], "full"),
        ("crop_first", "weak", "weak", [150, 240], "full"),  # the full search's weak face wins over the crop scale's
        ("crop_first", "weak", None, [150, 240], "crop"),  # only the crop scale saw anything: its weak face is kept
        ("crop_first", None, "weak", [150, 240], "full"),
        ("crop_first", None, None, [150, 240], None),
        ("crop_any", "strong", "strong", [150], "crop"),
        ("crop_any", "weak", "strong", [150], "crop"),  # any face at the crop scale ends the search
        ("crop_any", "weak", None, [150], "crop"),
        ("crop_any", None, "weak", [150, 240], "full"),  # nothing at the crop scale: the full search decides
        ("crop_any", None, None, [150, 240], None),
        ("full", "strong", "weak", [240], "full"),
    ],
)
def test_which_search_decides(mode, crop, full, searched, expected) -> None:
    confidence = {"strong": 0.9, "weak": 0.3}
    # the same canvas box in both searches; mapped back through each search's padding and scale below
    boxes = {150: (25.0, 25.0, 45.0, 45.0), 240: (25.0, 25.0, 45.0, 45.0)}
    detector = _StubDetector(
        {
            size: [Detection(boxes[size], confidence[kind])]
            for size, kind in ((150, crop), (240, full))
            if kind is not None
        }
    )
    landmarker = TrackingLandmarker("stub", LandmarkConfig(small_frame_search=mode), detector, predictor=None)
    found = landmarker._detections(np.zeros((160, 160), np.uint8), small=True)
    assert detector.searched == searched
    if expected is None:
        assert found == []
        return
    (got,) = found
    assert got.confidence == confidence[crop if expected == "crop" else full]
    if expected == "crop":  # 100 px copy padded by 25: (0..20) there is (0..32) in the work image
        assert got.box == pytest.approx((0.3, 0.3, 32.3, 32.3))
    else:  # 160 px work image padded by 40
        assert got.box == pytest.approx((-15.0, -15.0, 5.0, 5.0))


def test_real_face_crops_get_the_same_points_from_crop_any_as_from_crop_first(shared_dir) -> None:
    """CK+48's crops all show a normal-strength face at the crop scale, so 'crop_any' changes none of their points
    (the CK+48 figures measured with 'crop_first' stand); a sample of 60 crops, every class."""
    root = shared_dir / "real" / "CK+48"
    if not root.is_dir():
        pytest.skip(f"real CK+48 crops not found at {root}")
    paths = sorted(root.glob("*/*.png"))[::8][:60]
    assert paths
    first, any_ = (build_landmarker(LandmarkConfig(small_frame_search=m)) for m in ("crop_first", "crop_any"))
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        a, b = first.detect_frame(image), any_.detect_frame(image)
        assert a.success and b.success and a.n_faces >= 1, path
        assert np.array_equal(a.points, b.points), path
