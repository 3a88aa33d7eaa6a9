"""The face region of aligned crops (model.input.mask = face): what is kept, what is replaced, and that the
background no longer reaches the network.

Contract: landmarks are (x, y) in 0-based crop pixels; crops are [S, S] grey or [S, S, 3] RGB uint8; the
appearance input is float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np
import pytest

from stages.errors import StageError
from stages.learning.inputs.face_mask import face_region, mask_face
from stages.learning.inputs.streams import appearance_input
from stages.learning.models import ModelInputConfig
from stages.preprocess.align import AlignConfig, crop_template

# a face exactly where alignment puts it: configs/ck48.yaml's framing (chin and forehead cut off), and a
# smaller framing that holds the whole region
POINTS = crop_template(AlignConfig(size=96, face_scale=0.51, vertical_offset=0.40)).astype(np.float32)
SMALL = crop_template(AlignConfig(size=96, face_scale=0.30, vertical_offset=0.40)).astype(np.float32)


def test_the_region_covers_the_face_and_not_the_corners() -> None:
    region = face_region(SMALL, 96)
    assert region.shape == (96, 96) and region.dtype == np.float32
    assert region.min() >= 0.0 and region.max() <= 1.0
    for x, y in SMALL[[30, 33, 48, 54, 57, 19, 24, 37, 44]]:  # nose, mouth, brows, eyes: well inside
        assert region[int(round(y)), int(round(x))] > 0.9
    for x, y in SMALL[[0, 4, 8, 12, 16]]:  # the jaw line is the edge: feathered inwards, so ~0 on it
        assert region[int(round(y)), int(round(x))] < 0.6
    for y, x in [(0, 0), (0, 95), (95, 0), (95, 95), (48, 0), (48, 95)]:  # corners, the sides by the ears
        assert region[y, x] < 0.05


def test_the_forehead_is_kept_up_to_the_lift() -> None:
    brow_top = float(SMALL[17:27, 1].min())
    eyes = float(np.linalg.norm(SMALL[36] - SMALL[45]))
    x = int(round(SMALL[27, 0]))
    assert brow_top - 0.7 * eyes > 0  # the test's rows are inside the crop
    lifted, flat = face_region(SMALL, 96, forehead=0.5), face_region(SMALL, 96, forehead=0.0)
    assert lifted[int(round(brow_top - 0.3 * eyes)), x] > 0.9  # forehead wrinkles (AU 1, 2) stay in
    assert lifted[int(round(brow_top - 0.7 * eyes)), x] < 0.1
    assert flat[int(round(brow_top - 0.3 * eyes)), x] < 0.1


def test_feather_zero_gives_a_hard_edge_and_feathering_a_soft_one() -> None:
    hard = face_region(POINTS, 96, feather=0.0)
    soft = face_region(POINTS, 96, feather=2.0)
    assert np.mean((hard > 0.02) & (hard < 0.98)) < np.mean((soft > 0.02) & (soft < 0.98))


@pytest.mark.parametrize("bad", [np.full((68, 2), np.nan), np.zeros((5, 2)), np.zeros((68, 2))])
def test_unusable_landmarks_are_a_stage_error(bad: np.ndarray) -> None:
    with pytest.raises(StageError):
        face_region(bad.astype(np.float32), 96)


@pytest.mark.parametrize("color", [False, True])
def test_masking_keeps_the_face_and_fills_the_rest_with_its_mean(color: bool) -> None:
    rng = np.random.default_rng(0)
    frame = rng.random((96, 96, 3) if color else (96, 96)).astype(np.float32)
    region = face_region(POINTS, 96, feather=0.0)
    out = mask_face(frame, region)
    assert out.shape == frame.shape and out.dtype == np.float32
    inside, outside = region == 1.0, region == 0.0
    np.testing.assert_allclose(out[inside], frame[inside], atol=1e-6)
    w = region[..., None] if color else region
    mean = (frame * w).sum(axis=(0, 1)) / region.sum()  # the region's weighted mean, per colour channel
    np.testing.assert_allclose(out[outside], np.broadcast_to(mean, out[outside].shape), atol=1e-5)


def _crops(background: int, color: bool = False) -> np.ndarray:
    """Three 96 px frames (grey, or RGB): a textured face inside the region on a flat ``background`` (uint8)."""
    rng = np.random.default_rng(1)
    face = face_region(POINTS, 96, feather=0.0) > 0.0
    frames = np.full((3, 96, 96, 3) if color else (3, 96, 96), background, np.uint8)
    texture = (3, int(face.sum()), 3) if color else (3, int(face.sum()))
    frames[:, face] = rng.integers(60, 200, size=texture, dtype=np.uint8)
    return frames


@pytest.mark.parametrize("color", [False, True])
def test_with_the_face_mask_the_background_does_not_reach_the_input(color: bool) -> None:
    cfg = ModelInputConfig(appearance="frames", k=3, size=48, mask="face")
    success = np.ones(3, bool)
    landmarks = np.repeat(POINTS[None], 3, axis=0)
    dark, white = (appearance_input(_crops(bg, color), success, cfg, landmarks) for bg in (20, 250))
    assert dark.shape == ((9 if color else 3), 48, 48)
    assert np.abs(dark - white).max() < 1e-5  # feathered inwards: no weight on any background pixel
    whole = ModelInputConfig(appearance="frames", k=3, size=48)  # without the mask the background is input
    unmasked = [appearance_input(_crops(bg, color), success, whole) for bg in (20, 250)]
    assert np.abs(unmasked[0] - unmasked[1]).max() > 0.8


def test_the_face_mask_needs_the_landmarks() -> None:
    cfg = ModelInputConfig(appearance="frames", k=3, size=48, mask="face")
    with pytest.raises(StageError, match="aligned landmarks"):
        appearance_input(_crops(20), np.ones(3, bool), cfg)
