"""Model family: shapes, skip connections, shared trajectory weights, fusion, registry, flip consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stages.errors import StageError
from stages.face_geometry import FLIP_PERMUTATION
from stages.learning.augment import augment_batch, hflip_appearance, hflip_landmarks, hflip_trajectory
from stages.learning.models import (
    AppearanceConfig,
    AugmentConfig,
    BuildContext,
    GeometryConfig,
    ModelConfig,
    build_model,
    list_models,
    parse_options,
    register_model,
    unregister_model,
)
from stages.learning.models.skipnet import RANK_STD, SkipNet, rank_normalise
from stages.learning.models.trajnet import TrajNet

SMALL_APP = {"channels": [4, 8, 8], "skip_dim": 6}


def small_cfg(**kw) -> ModelConfig:
    base = {"appearance": SMALL_APP, "geometry": {"hidden": 8}, "input": {"size": 16}}
    base.update(kw)
    return ModelConfig.model_validate(base)


@pytest.mark.parametrize("streams", ["appearance", "geometry", "fused"])
@pytest.mark.parametrize(("c", "s", "k", "length"), [(1, 16, 2, 8), (3, 24, 7, 16), (9, 32, 8, 40)])
def test_output_shapes(streams: str, c: int, s: int, k: int, length: int) -> None:
    model = build_model(small_cfg(streams=streams, input={"size": s}), k, c, length).eval()
    out = model(torch.rand(3, c, s, s), torch.randn(3, length, 68, 2))
    both = {"appearance", "geometry", "fused"}
    expected = {"appearance": {"appearance"}, "geometry": {"geometry"}, "fused": both}
    assert set(out) == expected[streams]
    assert all(v.shape == (3, k) for v in out.values())
    assert model.prediction_key in out


def test_skipnet_every_block_reaches_classifier() -> None:
    torch.manual_seed(0)
    net = SkipNet(3, 5, channels=[4, 8, 8, 8], skip_dim=6, dropout=0.0).eval()
    x = torch.rand(4, 3, 32, 32)
    skips, last = net.features(x)
    assert len(skips) == 4 and all(f.shape == (4, 6) for f in skips) and last.shape == (4, 8)
    base = net.head(skips, last)
    assert torch.allclose(base, net(x))
    for i in range(4):  # removing any one block's skip feature changes the decision
        zeroed = [torch.zeros_like(f) if j == i else f for j, f in enumerate(skips)]
        assert skips[i].abs().sum() > 0
        assert not torch.allclose(net.head(zeroed, last), base), f"block {i} does not reach the logits"
    # gradient from the logits reaches every block's own FC (not only through the last block)
    net.zero_grad()
    net(x).sum().backward()
    for i, skip in enumerate(net.skips):
        grad = skip[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches skip FC {i}"
    assert net.classifier.in_features == 4 * 6 + 8


def test_plaincnn_is_skipnet_without_skips() -> None:
    """The skip ablation: the same conv blocks, only the last block's pooled feature reaches the classifier."""
    cfg = small_cfg(streams="appearance", appearance={**SMALL_APP, "name": "plaincnn"})
    plain = build_model(cfg, 5, 1).appearance
    skip = build_model(small_cfg(streams="appearance"), 5, 1).appearance
    assert plain.classifier.in_features == SMALL_APP["channels"][-1]
    assert skip.classifier.in_features == SMALL_APP["channels"][-1] + 3 * SMALL_APP["skip_dim"]
    assert not any(p.numel() for p in plain.skips.parameters())
    plain.eval()
    assert plain(torch.rand(2, 1, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize(
    ("normalize", "invariant"), [("per_sample", (True, False)), ("rank", (True, True)), ("fixed", (False, False))]
)
def test_skipnet_input_normalisation(normalize: str, invariant: tuple[bool, bool]) -> None:
    """``invariant`` = (to a gain and offset, to a gamma curve)."""
    torch.manual_seed(0)
    net = SkipNet(2, 3, channels=[4, 8], skip_dim=4, normalize=normalize).eval()
    x = torch.rand(3, 2, 16, 16) * 0.5 + 0.1
    linear = torch.allclose(net(x), net(x * 1.6 + 0.05), atol=1e-4)  # brightness/contrast change
    gamma = torch.allclose(net(x), net(x**2.2), atol=1e-4)  # another camera's response curve
    assert (linear, gamma) == invariant


def test_rank_normalise_is_equalisation_with_tied_mid_ranks() -> None:
    x = torch.tensor([[[[0.2, 0.9], [0.2, 0.5]]]])  # ranks 1.5, 4, 1.5, 3 of 4 -> quantiles 1/4, 7/8, 1/4, 5/8
    q = torch.tensor([[[[0.25, 0.875], [0.25, 0.625]]]])
    assert torch.allclose(rank_normalise(x), (q - 0.5) / RANK_STD)
    assert torch.equal(rank_normalise(torch.zeros(1, 1, 3, 3)), torch.zeros(1, 1, 3, 3))  # a blank (failed) frame
    big = rank_normalise(torch.rand(2, 3, 24, 24))
    assert abs(big.mean().item()) < 1e-5 and abs(big.std().item() - 1.0) < 0.01


def test_skipnet_rejects_too_small_input() -> None:
    with pytest.raises(StageError, match="smaller"):
        build_model(small_cfg(appearance={"channels": [4, 4, 4, 4]}, input={"size": 8}), 3, 1, 8)


def test_trajnet_weights_shared_over_time() -> None:
    torch.manual_seed(0)
    net = TrajNet(4, hidden=16, layers=2, temporal_kernel=1).eval()
    traj = torch.randn(2, 12, 68, 2)
    perm = torch.randperm(12)
    # the same per-step network + mean/max pooling: reordering steps leaves the output unchanged
    torch.testing.assert_close(net(traj[:, perm]), net(traj), rtol=1e-5, atol=1e-6)
    # each step's feature depends on that step only
    step = net.step_features(traj)
    single = net.step_features(traj[:, 5:6])
    torch.testing.assert_close(step[:, :, 5:6], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", [1, 3])
def test_trajnet_any_length_same_parameters(kernel: int) -> None:
    counts = set()
    for length in (8, 16, 40):
        model = build_model(
            small_cfg(streams="geometry", geometry={"hidden": 8, "temporal_kernel": kernel}), 3, 1, length
        ).eval()
        counts.add(sum(p.numel() for p in model.parameters()))
        for other in (8, 16, 40):
            assert model(None, torch.randn(2, other, 68, 2))["geometry"].shape == (2, 3)
    assert len(counts) == 1


def test_flat_needs_its_length() -> None:
    cfg = small_cfg(streams="geometry", geometry={"name": "flat", "flat_hidden": [10, 20]})
    model = build_model(cfg, 3, 1, 16).eval()
    assert model(None, torch.randn(2, 16, 68, 2))["geometry"].shape == (2, 3)
    with pytest.raises(StageError, match="16 steps"):
        model(None, torch.randn(2, 8, 68, 2))
    with pytest.raises(StageError, match="n_steps"):
        build_model(cfg, 3, 1, None)


def test_trajnet_rejects_bad_shape() -> None:
    model = build_model(small_cfg(streams="geometry"), 3, 1, 8)
    with pytest.raises(StageError, match="68, 2"):
        model(None, torch.randn(2, 8, 136))


def _fused_parts(fusion: str, weight: float = 0.5):
    torch.manual_seed(0)
    model = build_model(small_cfg(fusion=fusion, fusion_weight=weight), 4, 1, 8).eval()
    out = model(torch.rand(3, 1, 16, 16), torch.randn(3, 8, 68, 2))
    return model, out


def test_fusion_sum_is_half_half() -> None:
    model, out = _fused_parts("sum", weight=0.9)  # the weight is ignored by "sum"
    torch.testing.assert_close(out["fused"], 0.5 * out["appearance"] + 0.5 * out["geometry"])
    assert not any("fusion" in n for n, _ in model.named_parameters())


def test_fusion_weighted_uses_fixed_weight() -> None:
    model, out = _fused_parts("weighted", weight=0.8)
    torch.testing.assert_close(out["fused"], 0.8 * out["appearance"] + 0.2 * out["geometry"])
    assert not any("fusion" in n for n, _ in model.named_parameters())


def test_fusion_learned_weight_is_a_parameter_with_gradient() -> None:
    model, out = _fused_parts("learned", weight=0.3)
    names = [n for n, _ in model.named_parameters()]
    assert "fusion_logit" in names
    assert float(model.fusion_weight().detach()) == pytest.approx(0.3, abs=1e-6)
    torch.testing.assert_close(out["fused"], 0.3 * out["appearance"] + 0.7 * out["geometry"])
    loss = model.loss(out, torch.tensor([0, 1, 2]))
    loss.backward()
    assert model.fusion_logit.grad is not None and model.fusion_logit.grad.abs() > 0


def test_joint_loss_sums_three_cross_entropies() -> None:
    y = torch.tensor([0, 1, 3])
    joint, out = _fused_parts("sum")
    ce = {k: nn.functional.cross_entropy(v, y) for k, v in out.items()}
    torch.testing.assert_close(joint.loss(out, y), ce["appearance"] + ce["geometry"] + ce["fused"])
    single = build_model(small_cfg(joint_loss=False), 4, 1, 8)
    torch.testing.assert_close(single.loss(out, y), ce["fused"])


@pytest.mark.parametrize("color", [False, True])
def test_frames_mode_is_the_per_frame_network_averaged(color: bool) -> None:
    """appearance 'frames': one network with in_channels = colours, run on each frame of the frame-major stack;
    the logits are the mean of the per-frame logits, so the frame order does not matter."""
    k, c = 3, 3 if color else 1
    model = build_model(small_cfg(streams="appearance", input={"size": 16, "appearance": "frames", "k": k}), 5, k * c)
    model.eval()
    inner = model.appearance.net
    assert inner.blocks[0][0].in_channels == c
    x = torch.rand(2, k * c, 16, 16)
    per_frame = torch.stack([inner(x[:, f * c : (f + 1) * c]) for f in range(k)], dim=1).mean(dim=1)
    torch.testing.assert_close(model(x)["appearance"], per_frame)
    reversed_frames = torch.cat([x[:, f * c : (f + 1) * c] for f in reversed(range(k))], dim=1)
    torch.testing.assert_close(model(reversed_frames)["appearance"], per_frame)


def test_frames_mode_train_one_feeds_one_frame_per_sequence() -> None:
    cfg = small_cfg(streams="appearance", input={"size": 16, "appearance": "frames", "k": 3, "train_frames": "one"})
    model = build_model(cfg, 5, 3)
    inner = model.appearance.net
    inner.eval()  # the inner network deterministic; only the wrapper's training flag matters below
    model.appearance.training = True
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(3)
    out = model.appearance(x)
    torch.manual_seed(3)
    pick = torch.randint(3, (4,))
    torch.testing.assert_close(out, inner(x[torch.arange(4), pick][:, None]))
    model.eval()
    mean = torch.stack([inner(x[:, f : f + 1]) for f in range(3)], dim=1).mean(dim=1)
    torch.testing.assert_close(model.appearance(x), mean)


def test_frames_mode_refuses_networks_with_extra_channels() -> None:
    cfg = small_cfg(streams="appearance", input={"size": 16, "appearance": "frames", "k": 3})
    with pytest.raises(StageError, match="frames x colours"):
        build_model(cfg, 5, 3 + 5)


def test_test_flip_averages_input_and_mirror_in_eval_only() -> None:
    torch.manual_seed(0)
    flipped = build_model(small_cfg(test_flip=True), 4, 1, 8)
    plain = build_model(small_cfg(), 4, 1, 8)
    plain.load_state_dict(flipped.state_dict())
    app, traj = torch.rand(2, 1, 16, 16), torch.randn(2, 8, 68, 2)
    flipped.eval(), plain.eval()
    a, b = plain(app, traj), plain(hflip_appearance(app), hflip_trajectory(traj))
    out = flipped(app, traj)
    for key in ("appearance", "geometry", "fused"):
        torch.testing.assert_close(out[key], (a[key] + b[key]) / 2)
    mirrored = flipped(hflip_appearance(app), hflip_trajectory(traj))
    torch.testing.assert_close(mirrored["fused"], out["fused"])  # invariant to mirroring
    flipped.train(), plain.train()
    torch.manual_seed(1)
    train_out = flipped(app, traj)["geometry"]
    torch.manual_seed(1)
    torch.testing.assert_close(train_out, plain(app, traj)["geometry"])


def test_label_smoothing_reaches_every_loss_term() -> None:
    y = torch.tensor([0, 1, 3])
    joint, out = _fused_parts("sum")
    expected = sum(nn.functional.cross_entropy(v, y, label_smoothing=0.2) for v in out.values())
    torch.testing.assert_close(joint.loss(out, y, label_smoothing=0.2), expected)
    assert not torch.allclose(joint.loss(out, y, label_smoothing=0.2), joint.loss(out, y))


def test_streams_switch() -> None:
    app_only = build_model(small_cfg(streams="appearance"), 3, 1, 8)
    assert app_only.geometry is None and app_only.prediction_key == "appearance"
    assert not any(n.startswith("geometry") for n, _ in app_only.named_parameters())
    geo_only = build_model(small_cfg(streams="geometry"), 3, 1, 8)
    assert geo_only.appearance is None and geo_only.prediction_key == "geometry"
    assert not any(n.startswith("appearance") for n, _ in geo_only.named_parameters())
    with pytest.raises(StageError, match="trajectory"):
        build_model(small_cfg(), 3, 1, 8)(torch.rand(2, 1, 16, 16), None)


def test_registry_unknown_name_lists_known() -> None:
    with pytest.raises(StageError, match=r"unknown appearance model 'nope'.*skipnet"):
        build_model(small_cfg(appearance={"name": "nope"}), 3, 1, 8)
    with pytest.raises(StageError, match=r"flat, trajnet"):
        build_model(small_cfg(geometry={"name": "nope"}), 3, 1, 8)


def test_registry_new_model_and_options() -> None:
    from pydantic import BaseModel, ConfigDict

    class TinyOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        width: int = 5

    class Tiny(nn.Module):
        def __init__(self, c: int, k: int, width: int) -> None:
            super().__init__()
            self.fc = nn.Linear(c, width)
            self.out = nn.Linear(width, k)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.fc(x.mean(dim=(2, 3))))

    @register_model("appearance", name="tiny_test_net")
    def tiny(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
        """A test network."""
        return Tiny(ctx.in_channels, ctx.n_classes, parse_options(cfg, TinyOptions, "tiny_test_net").width)

    try:
        assert "tiny_test_net" in list_models("appearance")
        model = build_model(small_cfg(appearance={"name": "tiny_test_net", "options": {"width": 7}}), 3, 2, 8)
        assert model.appearance.fc.out_features == 7
        assert model(torch.rand(2, 2, 16, 16), torch.randn(2, 8, 68, 2))["fused"].shape == (2, 3)
        with pytest.raises(StageError, match="tiny_test_net"):
            build_model(small_cfg(appearance={"name": "tiny_test_net", "options": {"depth": 3}}), 3, 2, 8)
        with pytest.raises(ValueError, match="already registered"):
            register_model("appearance", name="tiny_test_net")(lambda cfg, ctx: None)
    finally:
        unregister_model("appearance", "tiny_test_net")
    assert "tiny_test_net" not in list_models("appearance")


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValueError):
        ModelConfig.model_validate({"appearance": {"chanels": [8]}})
    with pytest.raises(ValueError):
        GeometryConfig(hiden=3)


# ---- flip consistency -------------------------------------------------------------------------------------

MIDLINE = {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
REGIONS = [range(0, 17), range(17, 27), range(27, 36), range(36, 48), range(48, 60), range(60, 68)]


def test_flip_permutation_structure() -> None:
    perm = np.asarray(FLIP_PERMUTATION)
    assert sorted(perm.tolist()) == list(range(68))
    assert (perm[perm] == np.arange(68)).all()  # an involution
    assert {i for i in range(68) if perm[i] == i} == MIDLINE
    for region in REGIONS:
        assert all(perm[i] in region for i in region)
    # eye corners keep their role: outer <-> outer, inner <-> inner; mouth corners swap
    assert (perm[36], perm[39], perm[48], perm[60]) == (45, 42, 54, 64)


def _render_marks(points: np.ndarray, size: int) -> np.ndarray:
    """One bright pixel per landmark, its value encoding the landmark index (1..68)."""
    img = np.zeros((size, size), np.float32)
    for i, (x, y) in enumerate(np.rint(points).astype(int)):
        img[y, x] = i + 1
    return img


def _detect_marks(img: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Landmark i of the image = the pixel of the mark drawn for ``labels[i]``."""
    return np.array([np.argwhere(img == labels[i] + 1)[0][::-1] for i in range(68)], np.float32)


def _distinct_face(rng: np.random.Generator, size: int) -> np.ndarray:
    from stages.face_geometry import TEMPLATE

    while True:  # an asymmetric face (jittered template) whose 68 points fall on distinct pixels
        pts = size / 2 + TEMPLATE * (size / 3) + rng.normal(scale=1.0, size=(68, 2))
        pts = np.rint(pts)
        if len({tuple(p) for p in pts}) == 68:
            return pts.astype(np.float32)


def test_flip_image_and_landmarks_agree() -> None:
    """Flip the image of a face, re-derive its landmarks: they equal the mirrored, permuted landmarks; and the
    trajectory of the flipped sequence equals the flipped trajectory."""
    size = 48
    rng = np.random.default_rng(3)
    neutral = _distinct_face(rng, size)
    apex = neutral.copy()
    apex[48:] += [[-1.0, 2.0]] * 20  # an asymmetric move of the mouth to the image left and down
    apex[17:22, 1] -= 2.0  # image-left brow up
    assert len({tuple(p) for p in apex}) == 68
    frames = [torch.from_numpy(_render_marks(p, size)) for p in (neutral, apex)]
    flipped = [hflip_appearance(f).numpy() for f in frames]
    # old point j is point FLIP[j] of the flipped face, so new point i shows the mark of old point FLIP[i]
    redetected = [_detect_marks(f, np.asarray(FLIP_PERMUTATION)) for f in flipped]
    for old, new in zip((neutral, apex), redetected, strict=True):
        torch.testing.assert_close(hflip_landmarks(torch.from_numpy(old), width=size), torch.from_numpy(new))
    traj = torch.from_numpy(np.stack([neutral - neutral, apex - neutral]))
    flipped_traj = torch.from_numpy(np.stack([redetected[0] - redetected[0], redetected[1] - redetected[0]]))
    torch.testing.assert_close(hflip_trajectory(traj), flipped_traj)


def test_flip_of_symmetric_face_is_itself() -> None:
    """The mirror permutation maps a mirror-symmetric face onto itself (catches swapped eye/mouth orders)."""
    from stages.face_geometry import TEMPLATE

    pts = torch.from_numpy(np.asarray(TEMPLATE, dtype=np.float32))
    torch.testing.assert_close(hflip_landmarks(pts), pts)
    wrong = pts[torch.arange(67, -1, -1)].clone()
    wrong[:, 0] = -wrong[:, 0]
    assert (wrong - pts).abs().max() > 0.1


def test_flip_twice_is_identity() -> None:
    x = torch.rand(2, 3, 8, 8)
    t = torch.randn(2, 5, 68, 2)
    assert torch.equal(hflip_appearance(hflip_appearance(x)), x)
    assert torch.equal(hflip_trajectory(hflip_trajectory(t)), t)


def test_augment_flip_is_joint_per_sample() -> None:
    cfg = AugmentConfig(flip=True, rotate_deg=0, scale=0, shift=0, brightness=0)
    x = torch.rand(16, 3, 8, 8)
    t = torch.randn(16, 4, 68, 2)
    xa, ta = augment_batch(x, t, cfg, torch.Generator().manual_seed(0))
    img_flipped = [torch.equal(xa[i], hflip_appearance(x[i])) for i in range(16)]
    traj_flipped = [torch.equal(ta[i], hflip_trajectory(t[i])) for i in range(16)]
    assert img_flipped == traj_flipped and 0 < sum(img_flipped) < 16
    assert all(torch.equal(xa[i], x[i]) for i in range(16) if not img_flipped[i])


def test_augment_is_seeded_and_bounded() -> None:
    cfg = AugmentConfig(traj_noise=0.01)
    x = torch.rand(4, 3, 16, 16)
    t = torch.randn(4, 6, 68, 2)
    a1 = augment_batch(x, t, cfg, torch.Generator().manual_seed(5))
    a2 = augment_batch(x, t, cfg, torch.Generator().manual_seed(5))
    a3 = augment_batch(x, t, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])
    assert not torch.equal(a1[0], a3[0])
    assert a1[0].shape == x.shape and a1[0].min() >= 0 and a1[0].max() <= 1
    assert not torch.equal(a1[0], x)  # rotation/zoom/shift/gain did something
    # appearance-only batch: no trajectory needed
    app, traj = augment_batch(x, None, cfg, torch.Generator().manual_seed(5))
    assert traj is None and app.shape == x.shape


def test_fusion_mixture_is_the_mean_of_stream_probabilities() -> None:
    """mixture: fused = log(w * p_app + (1 - w) * p_geo), so softmax(fused) is the weighted mean of the streams'
    probabilities (a stream's confident 'no' cannot veto the other stream, unlike a sum of logits)."""
    model, out = _fused_parts("mixture", weight=0.3)
    expected = 0.3 * torch.softmax(out["appearance"], 1) + 0.7 * torch.softmax(out["geometry"], 1)
    torch.testing.assert_close(torch.softmax(out["fused"], 1), expected)
    torch.testing.assert_close(out["fused"].exp().sum(1), torch.ones(3))  # already log-probabilities
    assert not any("fusion" in n for n, _ in model.named_parameters())


def test_photometric_augment_changes_contrast_gamma_and_sharpness_only_when_asked() -> None:
    x = torch.rand(6, 3, 16, 16)
    plain = AugmentConfig(flip=False, rotate_deg=0, scale=0, shift=0, brightness=0)
    same, _ = augment_batch(x, None, plain, torch.Generator().manual_seed(1))
    assert torch.equal(same, x)
    photo = plain.model_copy(update={"contrast": 0.5, "gamma": 0.5, "blur": 1.5})
    out, _ = augment_batch(x, None, photo, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    # the same transform for every frame (channel) of a sample: frames stacked in channels stay aligned
    y = x[:, :1].repeat(1, 3, 1, 1)
    oy, _ = augment_batch(y, None, photo, torch.Generator().manual_seed(1))
    assert torch.allclose(oy[:, 0], oy[:, 1]) and torch.allclose(oy[:, 0], oy[:, 2])


def test_random_erase_blanks_one_rectangle_per_sample_to_its_mean() -> None:
    """erase=1: every sample gets one rectangle (2-40 % of the crop) set to the sample's mean, in the same place
    in every frame (channel); erase=0 draws nothing and changes nothing."""
    x = torch.rand(16, 3, 24, 24)
    plain = AugmentConfig(flip=False, rotate_deg=0, scale=0, shift=0, brightness=0)
    out, _ = augment_batch(x, None, plain.model_copy(update={"erase": 1.0}), torch.Generator().manual_seed(2))
    changed = out != x
    assert torch.equal(changed[:, 0], changed[:, 1]) and torch.equal(changed[:, 0], changed[:, 2])
    share = changed[:, 0].float().mean(dim=(1, 2))
    assert bool((share > 0.005).all()) and bool((share <= 0.42).all())
    for i in range(len(x)):
        assert torch.allclose(out[i][changed[i]], x[i].mean().expand(int(changed[i].sum())))
        rows, cols = changed[i, 0].any(dim=1).nonzero(), changed[i, 0].any(dim=0).nonzero()
        box = changed[i, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all())  # one solid rectangle
    same, _ = augment_batch(x, None, plain, torch.Generator().manual_seed(2))
    assert torch.equal(same, x)


def test_photometric_options_leave_the_default_random_stream_alone() -> None:
    """Configs without the photometric options draw exactly the numbers they drew before the options existed:
    otherwise every published figure would move."""
    cfg = AugmentConfig(traj_noise=0.01)
    x, t = torch.rand(4, 3, 16, 16), torch.randn(4, 6, 68, 2)
    gen = torch.Generator().manual_seed(3)
    augment_batch(x, t, cfg, gen)
    ref = torch.Generator().manual_seed(3)
    for shape in [(4,), (4,), (4,), (4, 2), (4,)]:  # flip, angle, zoom, shift, gain
        torch.rand(shape, generator=ref)
    torch.randn(t.shape, generator=ref)  # trajectory noise
    assert torch.equal(torch.rand(5, generator=gen), torch.rand(5, generator=ref))


def test_gaussian_blur_keeps_flat_images_and_smooths_edges() -> None:
    from stages.learning.augment import gaussian_blur

    flat = torch.full((2, 1, 12, 12), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.0, 2.0])), flat)
    edge = torch.zeros(2, 1, 12, 12)
    edge[..., 6:] = 1.0
    out = gaussian_blur(edge, torch.tensor([0.0, 1.5]))
    torch.testing.assert_close(out[0], edge[0], atol=1e-4, rtol=0)  # sigma 0: unchanged
    assert 0.05 < float(out[1, 0, 0, 5]) < 0.5 and 0.5 < float(out[1, 0, 0, 6]) < 0.95
