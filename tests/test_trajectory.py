"""Landmark motion trajectories (stages.preprocess.trajectory)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.errors import StageError
from stages.face_geometry import TEMPLATE
from stages.preprocess.align import transform_points
from stages.preprocess.trajectory import TrajectoryConfig, compute_trajectory, fill_missing_frames, resample

NORMALISERS = ["nose_std", "procrustes"]
CORNERS = [48, 54]


def _face(scale: float = 50.0, shift=(56.0, 30.0)) -> np.ndarray:
    """An identity-specific face: the template with a wider jaw and a slightly asymmetric mouth, in pixels."""
    face = TEMPLATE.copy()
    face[0:17, 0] *= 1.1
    face[48:68, 1] += 0.03
    return face * scale + np.array(shift)


def _smile(n_frames: int, amount: float = 6.0, face: np.ndarray | None = None) -> np.ndarray:
    """Mouth corners move outwards and up by ``amount`` pixels along a smooth ramp over normalised time."""
    face = _face() if face is None else face
    u = np.linspace(0.0, 1.0, n_frames)
    ramp = 0.5 - 0.5 * np.cos(np.pi * u)  # smooth onset to apex
    seq = np.repeat(face[None], n_frames, axis=0)
    seq[:, 48, 0] -= amount * ramp
    seq[:, 54, 0] += amount * ramp
    seq[:, CORNERS, 1] -= 0.5 * amount * ramp[:, None]
    return seq


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def _ok(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


@pytest.mark.parametrize("normalise", NORMALISERS)
def test_shape_and_dtype(normalise):
    traj = compute_trajectory(_smile(12), _ok(12), TrajectoryConfig(length=7, normalise=normalise))
    assert traj.shape == (7, 68, 2) and traj.dtype == np.float32


@pytest.mark.parametrize("normalise", NORMALISERS)
def test_static_face_gives_zeros(normalise):
    seq = np.repeat(_face()[None], 9, axis=0)
    traj = compute_trajectory(seq, _ok(9), TrajectoryConfig(normalise=normalise))
    np.testing.assert_allclose(traj, 0.0, atol=1e-6)


@pytest.mark.parametrize("normalise", NORMALISERS)
def test_mouth_corner_motion_shows_on_those_points_only(normalise):
    traj = compute_trajectory(_smile(10), _ok(10), TrajectoryConfig(normalise=normalise))
    others = np.setdiff1d(np.arange(68), CORNERS)
    np.testing.assert_allclose(traj[:, others], 0.0, atol=1e-6)
    assert np.allclose(traj[0], 0.0)
    end = traj[-1]
    assert end[48, 0] < -0.05 and end[54, 0] > 0.05  # outwards
    assert end[48, 1] < -0.02 and end[54, 1] < -0.02  # up (y down)
    assert np.abs(traj[:, CORNERS, 0]).max() == pytest.approx(np.abs(end[CORNERS, 0]).max(), rel=1e-6)


def test_frame_scale_leaks_mouth_motion_into_other_points():
    """The DTAGN per-frame scale is available and does what the docs say: an open mouth rescales the face."""
    traj = compute_trajectory(_smile(10, amount=10), _ok(10), TrajectoryConfig(scale="frame"))
    assert np.abs(traj[-1, 36:48]).max() > 1e-3


@pytest.mark.parametrize("normalise", NORMALISERS)
@pytest.mark.parametrize("angle,scale,tx,ty", [(0.0, 1.0, 37.0, -12.0), (0.0, 1.8, 5.0, 9.0), (3.0, 0.7, -4.0, 20.0)])
def test_head_position_and_size_drop_out(normalise, angle, scale, tx, ty):
    cfg = TrajectoryConfig(normalise=normalise)
    seq = _smile(14)
    base = compute_trajectory(seq, _ok(14), cfg)
    moved = compute_trajectory(transform_points(seq, _similarity(angle, scale, tx, ty)), _ok(14), cfg)
    # exact for translation and scale; a 3 degree rotation turns the nose_std displacements by 3 degrees
    tol = 1e-5 if angle == 0 else np.deg2rad(angle) * np.abs(base).max() * 1.05
    np.testing.assert_allclose(moved, base, atol=tol)
    assert np.abs(base).max() > 0.05  # the comparison is not between zeros


@pytest.mark.parametrize("normalise", NORMALISERS)
def test_identity_drops_out_with_the_first_frame_reference(normalise):
    """Two different faces making the same motion (same pixel displacements) give close trajectories."""
    cfg = TrajectoryConfig(normalise=normalise)
    other = TEMPLATE * 50 + np.array([56.0, 30.0])  # no wide jaw, no mouth offset
    a = compute_trajectory(_smile(10), _ok(10), cfg)
    b = compute_trajectory(_smile(10, face=other), _ok(10), cfg)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
    raw = TrajectoryConfig(normalise=normalise, reference="none")
    assert (
        np.abs(
            compute_trajectory(_smile(10), _ok(10), raw) - compute_trajectory(_smile(10, face=other), _ok(10), raw)
        ).max()
        > 0.02
    )  # without the reference, identity stays


@pytest.mark.parametrize("normalise", NORMALISERS)
def test_length_invariance(normalise):
    cfg = TrajectoryConfig(normalise=normalise, length=16)
    short = compute_trajectory(_smile(10), _ok(10), cfg)
    long = compute_trajectory(_smile(30), _ok(30), cfg)
    peak = np.abs(long).max()
    assert np.abs(short - long).max() < 0.03 * peak


def test_single_frame_is_repeated():
    seq = _face()[None]
    traj = compute_trajectory(seq, _ok(1), TrajectoryConfig(length=5, reference="none"))
    assert traj.shape == (5, 68, 2)
    np.testing.assert_array_equal(traj[0], traj[4])
    np.testing.assert_allclose(compute_trajectory(seq, _ok(1), TrajectoryConfig(length=5)), 0.0)


def test_resample_is_linear_over_normalised_time():
    seq = np.arange(5, dtype=np.float64)[:, None] * 2.0  # values 0, 2, 4, 6, 8 at u = 0, .25, .5, .75, 1
    np.testing.assert_allclose(resample(seq, 9)[:, 0], np.arange(9, dtype=np.float64))
    np.testing.assert_allclose(resample(seq, 2)[:, 0], [0.0, 8.0])


def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(0)
    seq = np.repeat(_face()[None], 40, axis=0) + rng.normal(0, 0.8, (40, 68, 2))
    ok = _ok(40)
    raw = compute_trajectory(seq, ok, TrajectoryConfig(length=40, reference="none"))
    smooth = compute_trajectory(seq, ok, TrajectoryConfig(length=40, reference="none", smooth_sigma=2.0))
    jitter = lambda t: np.abs(np.diff(t, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.3 * jitter(raw)


@pytest.mark.parametrize("normalise", NORMALISERS)
def test_failed_frames_are_interpolated(normalise):
    cfg = TrajectoryConfig(normalise=normalise, length=12)
    seq = _smile(12)
    full = compute_trajectory(seq, _ok(12), cfg)
    # a linear-in-time motion so interpolation of missing frames is exact
    lin = np.repeat(_face()[None], 12, axis=0)
    lin[:, 48, 0] -= np.linspace(0, 6, 12)
    lin[:, 54, 0] += np.linspace(0, 6, 12)
    ref = compute_trajectory(lin, _ok(12), cfg)
    holed = lin.copy()
    holed[[4, 5, 6]] = np.nan
    ok = _ok(12)
    ok[[4, 5, 6]] = False
    np.testing.assert_allclose(compute_trajectory(holed, ok, cfg), ref, atol=1e-5)
    # success True but NaN landmarks counts as failed too
    holed2 = lin.copy()
    holed2[7, 10] = np.nan
    np.testing.assert_allclose(compute_trajectory(holed2, _ok(12), cfg), ref, atol=1e-5)
    assert np.isfinite(full).all()


def test_edge_frames_copy_the_nearest_good_frame():
    pts = np.arange(5, dtype=np.float64)[:, None, None] * np.ones((5, 68, 2))
    valid = np.array([False, True, False, True, False])
    filled = fill_missing_frames(pts, valid)
    np.testing.assert_allclose(filled[:, 0, 0], [1.0, 1.0, 2.0, 3.0, 3.0])


def test_no_face_in_any_frame_raises():
    seq = np.full((6, 68, 2), np.nan)
    with pytest.raises(StageError, match="no face in any frame"):
        compute_trajectory(seq, np.zeros(6, dtype=bool), TrajectoryConfig())
    with pytest.raises(StageError, match="no face in any frame"):
        compute_trajectory(_smile(6), np.zeros(6, dtype=bool), TrajectoryConfig())


def test_bad_shape_raises():
    with pytest.raises(StageError):
        compute_trajectory(np.zeros((4, 5, 2)), _ok(4), TrajectoryConfig())


def test_deterministic():
    seq = _smile(11) + np.random.default_rng(3).normal(0, 0.5, (11, 68, 2))
    cfg = TrajectoryConfig(smooth_sigma=1.0, normalise="procrustes")
    first, second = compute_trajectory(seq, _ok(11), cfg), compute_trajectory(seq, _ok(11), cfg)
    np.testing.assert_array_equal(first, second)
