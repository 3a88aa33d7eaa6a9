"""Landmark backends: accuracy on real faces, no-face frames, tracking, multi-face policy, small crops, the provided
backend's readers, and the fan backend with stand-in networks."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from stages.errors import MissingWeightsError, StageError
from stages.face_geometry import TEMPLATE
from stages.preprocess.landmarks import LANDMARKERS, FrameLandmarks, LandmarkConfig, build_landmarker, nme
from stages.preprocess.landmarks.provided.readers import read_landmarks  # 300-W .pts: 1-based, returned 0-based

FACES = ("100032540_1", "1004467229_1", "1018882799_1")  # three of ../shared/faces


@pytest.fixture(scope="module")
def dlib_landmarker():
    return build_landmarker(LandmarkConfig())


@pytest.fixture(scope="module")
def astro_face() -> np.ndarray:
    """RGB crop of skimage's astronaut photo with the face in the middle (~87 px dlib box)."""
    return np.ascontiguousarray(astronaut()[20:280, 100:360])


def place(face: np.ndarray, scale: float, x: float, y: float, size=(640, 480)) -> np.ndarray:
    """``face`` scaled by ``scale`` with its top-left corner at (x, y) on a flat grey canvas."""
    matrix = np.float32([[scale, 0, x], [0, scale, y]])
    return cv2.warpAffine(face, matrix, size, borderValue=(90, 90, 90))


def moving_sequence(face: np.ndarray, n: int = 10, jump_at: int | None = None) -> list[np.ndarray]:
    """The face drifting right/down 5 px and growing 2% per frame; optionally jumping 220 px at ``jump_at``."""
    frames = []
    for k in range(n):
        jump = 220 if jump_at is not None and k >= jump_at else 0
        frames.append(place(face, 1 + 0.02 * k, 60 + 5 * k + jump, 100 + 2.5 * k))
    return frames


# -------------------------------------------------------------------------------------------- registry, config


def test_registry_names_and_unknown_backend():
    assert {"dlib", "fan", "provided"} <= set(LANDMARKERS)
    with pytest.raises(StageError, match="known: dlib, fan, provided"):
        build_landmarker(LandmarkConfig(backend="openface"))


def test_config_is_strict():
    with pytest.raises(ValueError):
        LandmarkConfig(detecter="hog")


def test_missing_predictor_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "shape_predictor_68_face_landmarks.dat"
    with pytest.raises(MissingWeightsError, match=str(missing)):
        build_landmarker(LandmarkConfig(predictor_path=str(missing)))


# -------------------------------------------------------------------------------------------- dlib accuracy


@pytest.mark.parametrize("name", FACES)
@pytest.mark.parametrize("color", ["grey", "rgb"])
def test_dlib_nme_on_real_faces(shared_dir, dlib_landmarker, name, color):
    image = cv2.imread(str(shared_dir / "faces" / f"{name}.jpg"), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if color == "grey" else cv2.COLOR_BGR2RGB)
    truth = read_landmarks(shared_dir / "faces" / f"{name}.pts")
    (result,) = dlib_landmarker.track_sequence([image])
    assert result.success and result.detected and result.n_faces == 1
    assert result.points.shape == (68, 2) and result.points.dtype == np.float32
    assert 0.5 < result.confidence <= 1.0
    assert nme(result.points, truth) < 0.06


@pytest.mark.parametrize(
    "image",
    [
        np.full((240, 320), 128, np.uint8),
        np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8),
        np.zeros((48, 48), np.uint8),
    ],
    ids=["blank", "noise", "small-blank"],
)
def test_no_face_is_a_failed_frame(dlib_landmarker, image):
    (result,) = dlib_landmarker.track_sequence([image])
    assert not result.success and result.confidence == 0.0 and result.box is None
    assert result.points.shape == (68, 2) and np.isnan(result.points).all()
    assert "no face" in result.note


# -------------------------------------------------------------------------------------------- tracking


def test_tracking_detects_once_and_matches_per_frame_detection(dlib_landmarker, astro_face):
    frames = moving_sequence(astro_face)
    tracked = list(dlib_landmarker.track_sequence(frames))
    detected = [dlib_landmarker.detect_frame(f) for f in frames]
    assert [r.detected for r in tracked] == [True] + [False] * 9
    assert all(r.success for r in tracked) and all(r.n_faces == 0 for r in tracked[1:])
    errors = [nme(t.points, d.points) for t, d in zip(tracked, detected, strict=True)]
    assert max(errors) < 0.03, errors
    # tracked confidence: the detection's, scaled by patch similarity, so never above it
    assert all(0.5 < r.confidence <= tracked[0].confidence + 1e-6 for r in tracked[1:])


def test_tracking_accuracy_on_real_faces(shared_dir, dlib_landmarker):
    for name in FACES:
        face = cv2.imread(str(shared_dir / "faces" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
        truth = read_landmarks(shared_dir / "faces" / f"{name}.pts")
        results = list(dlib_landmarker.track_sequence(moving_sequence(face)))
        assert sum(r.detected for r in results) == 1, name
        errors = [nme(r.points, truth * (1 + 0.02 * k) + [60 + 5 * k, 100 + 2.5 * k]) for k, r in enumerate(results)]
        assert np.mean(errors) < 0.04 and max(errors) < 0.06, (name, errors)


def held_out_faces(shared_dir: Path, every: int = 10) -> list[Path]:
    """Faces no tracking setting was tuned on: the second half of ../shared/faces by sorted name (the first half is
    the tuning half, and holds FACES), every ``every``-th of them."""
    pts = sorted((shared_dir / "faces").glob("*.pts"))
    return pts[len(pts) // 2 :: every]


def test_tracking_decisions_on_held_out_faces(shared_dir, dlib_landmarker):
    """On faces outside the tuning half: smooth motion is followed from one detection, and a sudden jump is caught
    and re-detected at exactly that frame."""
    followed = 0
    faces = held_out_faces(shared_dir)
    for pts in faces:
        face = cv2.imread(str(pts.with_suffix(".jpg")), cv2.IMREAD_GRAYSCALE)
        truth = read_landmarks(pts)
        if not dlib_landmarker.detect_frame(moving_sequence(face, n=1)[0]).success:
            continue  # the detector misses a few 300-W faces outright (6/200); tracking is not at issue there
        results = list(dlib_landmarker.track_sequence(moving_sequence(face)))
        # smooth motion: followed, allowing one spurious re-detection (one held-out face's first tracked patch
        # correlates 0.49 with its detection's, just under min_track_similarity)
        assert results[0].detected and sum(r.detected for r in results[1:]) <= 1, (pts.name, [r.note for r in results])
        assert all(r.success for r in results), pts.name
        errors = [nme(r.points, truth * (1 + 0.02 * k) + [60 + 5 * k, 100 + 2.5 * k]) for k, r in enumerate(results)]
        assert errors[1] < 0.08, (pts.name, errors)  # the first tracked frame starts from the detection
        jumped = list(dlib_landmarker.track_sequence(moving_sequence(face, n=8, jump_at=5)))
        assert not jumped[4].detected and jumped[5].detected, pts.name  # tracked up to the jump, re-detected at it
        assert jumped[5].note.startswith("tracking lost"), pts.name
        followed += 1
    assert followed >= len(faces) - 2, f"only {followed} of {len(faces)} held-out faces detected"


@pytest.mark.xfail(
    strict=True,
    reason="known: on 2 of these 10 held-out faces the tracked box walks off the face "
    "(NME 3% -> 13-50% in 10 frames) and no loss check fires; landmarks.subpixel=true cuts that (one face stays "
    "under 7%, the other is re-detected) but is off by default: see the issue-11 report",
)
def test_tracking_does_not_drift_on_held_out_faces(shared_dir, dlib_landmarker):
    """Tracked landmarks stay as accurate as the detection they started from, or the tracker re-detects."""
    for pts in held_out_faces(shared_dir):
        face = cv2.imread(str(pts.with_suffix(".jpg")), cv2.IMREAD_GRAYSCALE)
        truth = read_landmarks(pts)
        if not dlib_landmarker.detect_frame(moving_sequence(face, n=1)[0]).success:
            continue
        results = list(dlib_landmarker.track_sequence(moving_sequence(face)))
        errors = [nme(r.points, truth * (1 + 0.02 * k) + [60 + 5 * k, 100 + 2.5 * k]) for k, r in enumerate(results)]
        assert max(errors) < 0.08 or any(r.detected for r in results[1:]), (pts.name, errors)


def test_tracking_is_deterministic_and_streams(dlib_landmarker, astro_face):
    frames = moving_sequence(astro_face, n=4)
    first = list(dlib_landmarker.track_sequence(iter(frames)))  # a one-pass iterator, like the decoder's
    second = list(build_landmarker(LandmarkConfig()).track_sequence(frames))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.points, b.points) and a.confidence == b.confidence and a.box == b.box


def test_sudden_jump_redetects(dlib_landmarker, astro_face):
    frames = moving_sequence(astro_face, n=8, jump_at=5)
    results = list(dlib_landmarker.track_sequence(frames))
    assert [r.detected for r in results] == [True, False, False, False, False, True, False, False]
    assert results[5].note.startswith("tracking lost")
    reference = dlib_landmarker.detect_frame(frames[5])
    assert nme(results[5].points, reference.points) < 1e-6, "the jump frame is a fresh detection"


def test_face_leaving_and_returning(dlib_landmarker, astro_face):
    face = moving_sequence(astro_face, n=1)[0]
    empty = np.full_like(face, 90)
    results = list(dlib_landmarker.track_sequence([face, face, empty, empty, face, face]))
    assert [r.success for r in results] == [True, True, False, False, True, True]
    assert [r.detected for r in results] == [True, False, True, True, True, False]
    assert "tracking lost" in results[2].note


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (LandmarkConfig(redetect_every=3), [True, False, False, True, False, False, True]),
        (LandmarkConfig(track=False), [True] * 7),
    ],
)
def test_redetection_schedule(astro_face, cfg, expected):
    results = list(build_landmarker(cfg).track_sequence(moving_sequence(astro_face, n=7)))
    assert [r.detected for r in results] == expected


def test_frame_size_change_redetects(dlib_landmarker, astro_face):
    small = place(astro_face, 1.0, 40, 40, size=(400, 320))
    results = list(dlib_landmarker.track_sequence([moving_sequence(astro_face, n=1)[0], small]))
    assert all(r.success for r in results) and all(r.detected for r in results)


# -------------------------------------------------------------------------------------------- multi face


def _two_faces(face: np.ndarray) -> np.ndarray:
    """A 1.4x face on the left and a 1.0x face at the canvas centre."""
    canvas = place(face, 1.4, 0, 60, size=(900, 480))
    small = place(face, 1.0, 320, 110, size=(900, 480))
    canvas[110 : 110 + face.shape[0], 320 : 320 + face.shape[1]] = small[
        110 : 110 + face.shape[0], 320 : 320 + face.shape[1]
    ]
    return canvas


@pytest.mark.parametrize(("policy", "expect_larger"), [("largest", True), ("centre", False)])
def test_multi_face_policy(astro_face, policy, expect_larger):
    (result,) = build_landmarker(LandmarkConfig(multi_face=policy)).track_sequence([_two_faces(astro_face)])
    assert result.success and result.n_faces == 2
    width = result.box[2] - result.box[0]
    centre_x = (result.box[0] + result.box[2]) / 2
    if expect_larger:
        assert centre_x < 300 and width > 110
    else:
        assert 350 < centre_x < 550 and width < 110


# -------------------------------------------------------------------------------------------- small crops


def _crop48(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """48x48 crop of the landmarks' square bounding box (like CK+48), and the points in crop pixels."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float((hi - lo).max())
    x0, y0 = (lo + hi) / 2 - side / 2
    s = 48 / side
    matrix = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])
    crop = cv2.warpAffine(image, matrix, (48, 48), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return crop, (points * s - [x0 * s, y0 * s]).astype(np.float32)


def test_48px_crop_is_upscaled_and_found(dlib_landmarker):
    image = astronaut()
    full = dlib_landmarker.detect_frame(image)
    crop, expected = _crop48(image, full.points)
    (result,) = dlib_landmarker.track_sequence([crop])
    assert result.success, result.note
    assert np.all((result.points > -2) & (result.points < 50)), "points mapped back to 48x48 pixels"
    assert nme(result.points, expected) < 0.08


def test_48px_crops_of_real_faces(shared_dir, dlib_landmarker):
    for name in FACES:
        image = cv2.imread(str(shared_dir / "faces" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
        crop, truth = _crop48(image, read_landmarks(shared_dir / "faces" / f"{name}.pts"))
        result = dlib_landmarker.detect_frame(crop)
        assert result.success and nme(result.points, truth) < 0.08, (name, result.note)


def test_whole_frame_fallback_can_be_turned_off():
    noise = np.random.default_rng(1).integers(0, 256, (48, 48), dtype=np.uint8)
    on = build_landmarker(LandmarkConfig()).detect_frame(noise)
    off = build_landmarker(LandmarkConfig(whole_frame_fallback=False)).detect_frame(noise)
    assert on.success and on.note == "whole-frame box" and on.confidence < 0.5 and on.n_faces == 0
    assert not off.success


# -------------------------------------------------------------------------------------------- provided


def test_provided_reads_ckplus_pts_and_npy(tmp_path):
    truth = (TEMPLATE * 100 + [320, 240]).astype(np.float64)
    ck = tmp_path / "S005_001_00000001_landmarks.txt"
    np.savetxt(ck, truth, fmt="   %.7e")
    pts = tmp_path / "face.pts"
    rows = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in truth)
    pts.write_text(f"version: 1\nn_points:  68\n{{\n{rows}\n}}\n")
    npy = tmp_path / "face.npy"
    np.save(npy, truth)
    bad_count = tmp_path / "short_landmarks.txt"
    np.savetxt(bad_count, truth[:67])
    garbage = tmp_path / "garbage_landmarks.txt"
    garbage.write_text("not numbers\n")
    paths = [str(ck), str(pts), str(npy), "", str(tmp_path / "absent.txt"), str(bad_count), str(garbage)]

    landmarker = build_landmarker(LandmarkConfig(backend="provided"))
    frames = [np.zeros((480, 640), np.uint8)] * (len(paths) + 1)  # one more frame than paths
    results = list(landmarker.track_sequence(frames, provided=paths))
    assert len(results) == len(frames)
    for r in results[:3]:
        assert r.success and r.confidence == 1.0 and r.points.dtype == np.float32
        np.testing.assert_allclose(r.points, truth, atol=1e-3)
    assert [r.success for r in results[3:]] == [False] * 5
    assert "no landmark file" in results[3].note
    assert "missing" in results[4].note and "absent.txt" in results[4].note
    assert "malformed" in results[5].note and "short_landmarks.txt" in results[5].note
    assert "malformed" in results[6].note
    assert all(np.isnan(r.points).all() for r in results[3:])


def test_provided_without_paths_fails_every_frame():
    results = list(build_landmarker(LandmarkConfig(backend="provided")).track_sequence([np.zeros((4, 4))] * 2))
    assert [r.success for r in results] == [False, False]


# -------------------------------------------------------------------------------------------- fan


class _TemplateHeatmaps(torch.nn.Module):
    """Stand-in FAN: ignores the image; one peak per point at TEMPLATE's layout in heatmap cells."""

    def __init__(self) -> None:
        super().__init__()
        cells = np.round(TEMPLATE * 20 + [32, 24]).astype(np.int64)  # eyes 20 cells apart, inside 64x64
        heatmaps = torch.zeros(1, 68, 64, 64)
        for j, (x, y) in enumerate(cells):
            heatmaps[0, j, y, x] = 1.0
        self.register_buffer("heatmaps", heatmaps)
        self.cells = cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heatmaps.expand(x.shape[0], -1, -1, -1)


class _BrightestCell(torch.nn.Module):
    """Stand-in FAN: every point's heatmap peaks at the brightest 4x4 block of the crop."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), 4)
        return grid.repeat(1, 68, 1, 1)


def _script(module: torch.nn.Module, path: Path) -> str:
    """Save a stand-in network as TorchScript, the format old face-alignment releases ship FAN in."""
    with warnings.catch_warnings():  # torch 2.x deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


def _fan_expected(cells: np.ndarray, box) -> np.ndarray:
    """face-alignment's geometry, written out: crop centre = box centre raised by 0.12 box heights, side =
    200 * (w + h) / 195; heatmap cell k of 64 covers crop [k, k+1) / 64 of the side."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2 - 0.12 * (bottom - top)
    side = 200 * ((right - left) + (bottom - top)) / 195
    return (cells + 0.5) * side / 64 + [cx - side / 2 - 0.5, cy - side / 2 - 0.5]


def test_fan_missing_weights_says_what_to_put():
    with pytest.raises(MissingWeightsError, match="fan_weights"):
        build_landmarker(LandmarkConfig(backend="fan"))
    with pytest.raises(MissingWeightsError, match=r"/nowhere/no_such\.pth\.tar"):
        build_landmarker(LandmarkConfig(backend="fan", fan_weights="/nowhere/no_such.pth.tar"))


def test_fan_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "fan.pth.tar"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(StageError, match="not a FAN checkpoint"):
        build_landmarker(LandmarkConfig(backend="fan", fan_weights=str(bad)))


def test_fan_geometry_finds_a_bright_dot(tmp_path):
    from stages.preprocess.landmarks.fan.network import FanPredictor, load_fan_network

    predictor = FanPredictor(load_fan_network(_script(_BrightestCell(), tmp_path / "dot.pt")))
    box = (100.0, 80.0, 220.0, 200.0)
    cell = 200 * 240 / 195 / 64  # image pixels per heatmap cell
    for x, y in [(150, 120), (171, 97), (133, 151)]:
        image = np.zeros((300, 400), np.uint8)
        cv2.circle(image, (x, y), 2, 255, -1)
        points = predictor.predict(predictor.prepare(image), box)
        assert points.shape == (68, 2)
        assert np.abs(points - [x, y]).max() <= 0.5 * cell + 1.0, (x, y, points[0])


def test_fan_backend_tracks_with_a_stand_in_network(tmp_path, astro_face):
    stand_in = _TemplateHeatmaps()
    weights = _script(stand_in, tmp_path / "fan_template.pt")
    landmarker = build_landmarker(LandmarkConfig(backend="fan", fan_weights=weights))
    results = list(landmarker.track_sequence(moving_sequence(astro_face, n=4)))
    assert [r.detected for r in results] == [True, False, False, False]
    for r in results:
        assert r.success and isinstance(r, FrameLandmarks)
        np.testing.assert_allclose(r.points, _fan_expected(stand_in.cells, r.box), atol=1e-3)
    # the first box is dlib's detection on the astronaut's face (drawn at x 60.., y 100..)
    left, top, right, bottom = results[0].box
    assert 60 + 60 < left < right < 60 + 200 and 100 + 40 < top < bottom < 100 + 200


def test_fan_loads_a_face_alignment_state_dict(tmp_path, astro_face):
    pytest.importorskip("face_alignment", reason="face_alignment not importable")
    from face_alignment.models import FAN

    torch.manual_seed(0)
    path = tmp_path / "2DFAN1-random.pth.tar"
    torch.save({f"module.{k}": v for k, v in FAN(1).state_dict().items()}, path)
    landmarker = build_landmarker(LandmarkConfig(backend="fan", fan_weights=str(path)))
    (result,) = landmarker.track_sequence([moving_sequence(astro_face, n=1)[0]])
    assert result.detected and result.points.shape == (68, 2)
    assert result.success == bool(np.isfinite(result.points).all())


@pytest.mark.parametrize("scale", [1.0, 3.0, 6.0])
def test_coarse_detection_falls_back_to_full_resolution(astro_face, scale):
    """Detection first runs on a copy downscaled to ``detect_max_side``; a face too small to be found there
    (scale 1: an ~87 px face becomes ~15 px when a 1920x1440 frame is downscaled to 320) must still be found at
    full resolution, and at every scale the landmarks match full-resolution detection."""
    frame = place(astro_face, scale, 100, 100, size=(1920, 1440))
    coarse = build_landmarker(LandmarkConfig(detect_max_side=320)).detect_frame(frame)
    full = build_landmarker(LandmarkConfig(detect_max_side=0)).detect_frame(frame)
    assert coarse.success and full.success
    assert nme(coarse.points, full.points) < 0.05
