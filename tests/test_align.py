"""Template, similarity transform and face alignment (stages.face_geometry, stages.preprocess.align)."""

from __future__ import annotations

import typing

import cv2
import numpy as np
import pytest

from stages.errors import StageError
from stages.face_geometry import ANCHOR_INDICES, TEMPLATE, mirror_points
from stages.preprocess.align import (
    AlignConfig,
    align_face,
    align_frames,
    crop_template,
    similarity_transform,
    transform_points,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]],
        dtype=np.float64,
    )


def _scene(h: int = 240, w: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random RGB texture with a 'face' drawn at template landmarks placed with a known pose."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h // 8, w // 8, 3)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 200 + 20, 0, 255).astype(np.uint8)
    pts = transform_points(TEMPLATE, _similarity(8.0, 70.0, 150.0, 90.0))
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    return img, pts.astype(np.float32)


# --- template ---------------------------------------------------------------------------------------------


def test_template_is_mirror_symmetric_and_normalised():
    np.testing.assert_allclose(mirror_points(TEMPLATE), TEMPLATE, atol=1e-9)
    np.testing.assert_allclose(TEMPLATE[[36, 45]], [[-0.5, 0.0], [0.5, 0.0]])
    assert TEMPLATE[8, 1] > TEMPLATE[57, 1] > TEMPLATE[30, 1] > TEMPLATE[27, 1] > TEMPLATE[19, 1]  # y down
    assert (TEMPLATE[0:8, 0] < 0).all() and (TEMPLATE[36:42, 0] < 0).all()  # subject's right = image left


def test_anchor_names_match_the_config_choices():
    assert set(typing.get_args(AlignConfig.model_fields["anchors"].annotation)) == set(ANCHOR_INDICES)


# --- similarity_transform ---------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_similarity():
    m = _similarity(-23.0, 1.7, 12.0, -5.0)
    src = TEMPLATE * 50
    np.testing.assert_allclose(similarity_transform(src, transform_points(src, m)), m, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = TEMPLATE.copy()
    dst = src * np.array([-1.0, 1.0])  # a mirror image without re-indexing: best fit would be a reflection
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama's (1991) SVD solution, reflections excluded: the reference for the closed form."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(xd.T @ xs / len(src))
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / ((xs**2).sum() / len(src)))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


@pytest.mark.parametrize("kind", ["noise", "mirror", "pose", "one_point"])
def test_similarity_transform_equals_the_svd_solution(kind: str):
    """The closed form is Umeyama's solution: random point sets of 2-68 points, targets that are noise, mirror
    images (the SVD route's reflection case), noisy similarities, or all one point."""
    rng = np.random.default_rng(["noise", "mirror", "pose", "one_point"].index(kind))
    for _ in range(300):
        n = int(rng.integers(2, 69))
        src = rng.normal(size=(n, 2)) * rng.uniform(0.01, 500)
        if kind == "noise":
            dst = rng.normal(size=(n, 2))
        elif kind == "mirror":
            dst = src[:, ::-1] * 3 + 5
        elif kind == "pose":
            pose = _similarity(rng.uniform(-180, 180), rng.uniform(0.1, 10), 40, -7)
            dst = transform_points(src, pose) + rng.normal(size=(n, 2)) * 0.01
        else:
            dst = np.full((n, 2), 3.0)
        want = _umeyama(src, dst)
        np.testing.assert_allclose(similarity_transform(src, dst), want, rtol=0, atol=1e-10 * (1 + np.abs(want).max()))


def test_similarity_transform_rejects_degenerate_points():
    with pytest.raises(StageError):
        similarity_transform(np.ones((5, 2)), np.random.default_rng(0).random((5, 2)))


# --- align_face -------------------------------------------------------------------------------------------


def test_points_follow_the_matrix_and_exact_template_faces_land_on_the_template():
    img, pts = _scene()
    cfg = AlignConfig(size=96)
    face = align_face(img, pts, cfg)
    np.testing.assert_allclose(face.points, transform_points(pts, face.matrix), atol=1e-4)
    # the face is an exact similarity of the template, so every point (eyes included) lands on it
    np.testing.assert_allclose(face.points, crop_template(cfg), atol=1e-3)
    assert np.linalg.det(face.matrix[:, :2]) > 0


@pytest.mark.parametrize("angle,scale,shift", [(15.0, 1.3, (20.0, -10.0)), (-25.0, 0.8, (-30.0, 40.0))])
def test_rotated_scaled_shifted_copy_gives_the_same_crop(angle, scale, shift):
    img, pts = _scene()
    h, w = img.shape[:2]
    c = np.array([w / 2, h / 2])
    g = _similarity(angle, scale, 0.0, 0.0)
    g[:, 2] = c - g[:, :2] @ c + np.array(shift)  # rotate/scale about the image centre, then shift
    img2 = cv2.warpAffine(img, g, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # perturb the landmarks off-template so the fit is a real least-squares problem
    jitter = np.random.default_rng(1).normal(0, 1.0, pts.shape).astype(np.float32)
    cfg = AlignConfig(size=112, color="grey")
    a = align_face(img, pts + jitter, cfg)
    b = align_face(img2, transform_points(pts + jitter, g).astype(np.float32), cfg)
    np.testing.assert_allclose(a.points, b.points, atol=1e-3)
    diff = np.abs(a.image.astype(np.int16) - b.image.astype(np.int16))[8:-8, 8:-8]
    assert diff.mean() < 4.0, diff.mean()  # two bilinear resamplings; a 2-pixel misalignment gives ~19


@pytest.mark.parametrize(
    "color,in_shape,out_shape",
    [
        ("grey", (60, 80), (32, 32)),
        ("grey", (60, 80, 3), (32, 32)),
        ("grey", (60, 80, 1), (32, 32)),
        ("rgb", (60, 80), (32, 32, 3)),
        ("rgb", (60, 80, 3), (32, 32, 3)),
    ],
)
def test_colour_conversion(color, in_shape, out_shape):
    img = np.full(in_shape, 128, dtype=np.uint8)
    pts = transform_points(TEMPLATE, _similarity(0, 25, 40, 20))
    face = align_face(img, pts, AlignConfig(size=32, color=color))
    assert face.image.shape == out_shape and face.image.dtype == np.uint8
    assert (face.image == 128).all()  # replicate border: a flat image stays flat


def test_rgb_channels_are_kept_in_order():
    img = np.zeros((60, 80, 3), dtype=np.uint8)
    img[..., 0] = 200  # red
    pts = transform_points(TEMPLATE, _similarity(0, 25, 40, 20))
    face = align_face(img, pts, AlignConfig(size=32, color="rgb"))
    assert (face.image[..., 0] == 200).all() and (face.image[..., 1:] == 0).all()
    grey = align_face(img, pts, AlignConfig(size=32, color="grey")).image
    assert abs(int(grey[16, 16]) - round(0.299 * 200)) <= 1  # RGB weights, not BGR


def test_constant_border_is_black_outside_the_source():
    img = np.full((60, 60), 200, dtype=np.uint8)
    pts = transform_points(TEMPLATE, _similarity(0, 40, 30, 20))
    # a small face_scale makes the crop see ~200 source pixels around a 60-pixel image
    crop = align_face(img, pts, AlignConfig(size=64, border="constant", face_scale=0.2)).image
    assert (crop == 0).any() and (crop == 200).any()


def test_mirrored_image_gives_the_mirrored_crop():
    img, pts = _scene()
    jitter = np.random.default_rng(2).normal(0, 1.5, pts.shape)
    pts = pts + jitter
    cfg = AlignConfig(size=64)
    a = align_face(img, pts, cfg)
    b = align_face(np.ascontiguousarray(img[:, ::-1]), mirror_points(pts, width=img.shape[1]), cfg)
    np.testing.assert_allclose(b.points, mirror_points(a.points, width=cfg.size), atol=1e-3)
    diff = np.abs(b.image.astype(np.int16) - a.image[:, ::-1].astype(np.int16))
    assert diff.mean() < 1.0


def test_align_face_without_anchor_points_raises():
    img, pts = _scene()
    pts[36] = np.nan
    with pytest.raises(StageError, match="anchor"):
        align_face(img, pts, AlignConfig())


# --- align_frames -----------------------------------------------------------------------------------------


def test_align_frames_failed_frames_are_zeros_and_nan():
    img, pts = _scene()
    imgs = [img, img, img, img]
    points = np.stack([pts] * 4)
    points[1] = np.nan  # no face
    points[3] = 5.0  # degenerate landmarks (all on one pixel)
    success = np.array([True, False, True, True])
    success[1] = True  # success flag wrong but the points are NaN: still a failed frame
    crops, cpts = align_frames(imgs, points, success, AlignConfig(size=48, color="rgb"))
    assert crops.shape == (4, 48, 48, 3) and crops.dtype == np.uint8 and cpts.shape == (4, 68, 2)
    assert crops[0].any() and crops[2].any()
    assert not crops[1].any() and np.isnan(cpts[1]).all()
    assert not crops[3].any() and np.isnan(cpts[3]).all()
    # a success=False frame is skipped even with good points
    crops2, cpts2 = align_frames(imgs[:1], points[:1], np.array([False]), AlignConfig(size=48))
    assert crops2.shape == (1, 48, 48) and not crops2.any() and np.isnan(cpts2).all()


def test_align_frames_rejects_mismatched_lengths():
    img, pts = _scene()
    with pytest.raises(StageError):
        align_frames([img, img], pts[None], np.array([True, True]), AlignConfig())


@pytest.mark.shared
def test_real_faces_land_near_the_template(shared_dir):
    """Real 300-W photos: the outer eye corners land near the template and the mouth and chin are in view."""
    cfg = AlignConfig()
    tpl = crop_template(cfg)
    errors = []
    for pts_path in sorted((shared_dir / "faces").glob("*.pts"))[:10]:
        text = pts_path.read_text().split("{")[1].split("}")[0]
        pts = np.array(text.split(), dtype=np.float64).reshape(68, 2) - 1.0
        img = cv2.cvtColor(cv2.imread(str(pts_path.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
        face = align_face(img, pts, cfg)
        errors.append(np.linalg.norm(face.points[[36, 45]] - tpl[[36, 45]], axis=1).max())
        assert face.image.shape == (cfg.size, cfg.size)
        assert (face.points[48:68] > 0).all() and (face.points[48:68] < cfg.size - 1).all()
        assert 0 < face.points[8, 1] < cfg.size - 1
    iod = cfg.face_scale * cfg.size
    assert np.median(errors) < 0.15 * iod, errors


# --- antialias: faces larger than their crop ----------------------------------------------------------------

ANTIALIAS = AlignConfig(size=48, face_scale=0.5, vertical_offset=0.4, antialias=True)


def _large_face(pattern: np.ndarray, angle_deg: float = 12.0) -> np.ndarray:
    """Template points on ``pattern`` with an outer-eye distance of ~120 px: a 48 px crop shrinks it ~5x."""
    h, w = pattern.shape[:2]
    return transform_points(TEMPLATE, _similarity(angle_deg, 120.0, w / 2, h / 2 - 20))


@pytest.mark.parametrize("angle", [0.0, 12.0, -35.0])
def test_antialias_averages_detail_the_crop_cannot_hold(angle: float) -> None:
    """Pixel noise shrunk 5x: area averaging keeps ~1/5 of its spread (the mean of ~25 pixels); the bilinear warp
    alone samples single pixels (aliasing) and keeps most of it."""
    noise = np.random.default_rng(1).integers(0, 256, (400, 500)).astype(np.uint8)
    pts = _large_face(noise, angle)
    plain = align_face(noise, pts, ANTIALIAS.model_copy(update={"antialias": False})).image
    smooth = align_face(noise, pts, ANTIALIAS).image
    assert plain.std() > 35
    assert smooth.std() < 0.4 * plain.std()
    assert abs(float(smooth.mean()) - 127.5) < 3


@pytest.mark.parametrize("angle", [0.0, 12.0, -35.0])
def test_antialias_keeps_the_crops_geometry(angle: float) -> None:
    """On a linear ramp (which both bilinear sampling and area averaging reproduce exactly) the shrunk-then-warped
    crop is the plain crop within rounding: a crop shifted by half a pixel would be ~0.7 grey levels off on
    average. The points and the matrix are the same."""
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.clip(xx * 0.25 + yy * 0.15 + 20, 0, 255).astype(np.uint8)
    pts = _large_face(img, angle)
    plain = align_face(img, pts, ANTIALIAS.model_copy(update={"antialias": False}))
    smooth = align_face(img, pts, ANTIALIAS)
    diff = plain.image.astype(int) - smooth.image
    assert abs(diff.mean()) < 0.3 and np.abs(diff).max() <= 1
    assert np.array_equal(plain.points, smooth.points) and np.array_equal(plain.matrix, smooth.matrix)


def test_antialias_changes_nothing_where_the_crop_enlarges_the_face() -> None:
    """A 48 px face crop (CK+48, FER2013) aligned to 96 px: the same pixels with or without it."""
    img, _ = _scene(48, 48, seed=4)
    pts = transform_points(TEMPLATE, _similarity(5.0, 24.0, 24.0, 20.0))
    cfg = AlignConfig(size=96, face_scale=0.51, vertical_offset=0.4)
    assert np.array_equal(
        align_face(img, pts, cfg).image, align_face(img, pts, cfg.model_copy(update={"antialias": True})).image
    )


def test_antialias_off_leaves_configs_and_cache_keys_as_they_were() -> None:
    """Off (the default), the setting is left out of dumps, so cache keys and model fingerprints made before it
    existed still match; on, it is written, so crops made without it are never reused for it."""
    assert "antialias" not in AlignConfig().model_dump()
    assert AlignConfig(antialias=True).model_dump()["antialias"] is True
    assert AlignConfig.model_validate(AlignConfig(antialias=True).model_dump()).antialias
