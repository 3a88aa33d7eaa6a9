"""The appearance-network family (dtan, dba, resmask, pcnn, fn2en next to skipnet): shape contracts, each
network's defining mechanism, the extras/targets data path, and a short training that lowers the loss."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from stages.errors import MissingWeightsError, StageError
from stages.face_geometry import mirror_points
from stages.learning.inputs.extras import (
    ModelNeeds,
    append_extras,
    build_landmarks,
    build_model_inputs,
    build_targets,
    extra_channels,
    needs_of,
    peak_landmarks,
)
from stages.learning.inputs.face_descriptor import (
    DESCRIPTOR_DIM,
    FaceDescriber,
    descriptor_model_path,
    face_descriptors,
)
from stages.learning.inputs.streams import appearance_input
from stages.learning.models import (
    ModelConfig,
    ModelInputConfig,
    TrainConfig,
    build_model,
    list_models,
    register_model,
    unregister_model,
)
from stages.learning.models.dba import DBANet
from stages.learning.models.face_regions import (
    N_REGIONS,
    REGION_NAMES,
    boxes_from_masks,
    crop_patches,
    region_boxes,
    region_masks,
)
from stages.learning.models.fn2en import FN2EN
from stages.learning.models.pcnn import PCNN
from stages.learning.models.resmask import ResMaskNet
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.fit import fit
from stages.learning.training.predict import predict_proba
from stages.learning.training.pretrain import pretrain
from stages.preprocess.align import AlignConfig, align_face, crop_template
from stages.record import SequenceRecord

APPEARANCE = list_models("appearance")  # every registered network: none escapes the contract tests
GEOMETRY = list_models("geometry")
NO_AUGMENT = {"flip": False, "rotate_deg": 0, "scale": 0, "shift": 0, "brightness": 0}
SMALL = {  # options small enough for fast tests
    "skipnet": {},
    "dtan": {"channels": [8, 8], "fc": 32},
    "dba": {"widths": [8, 12, 16, 24], "stem": 8},
    "resmask": {"widths": [8, 12, 16, 24], "stem": 8},
    "pcnn": {"global_channels": [8, 16], "local_channels": [8, 8], "fusion_dim": 16},
    "fn2en": {"channels": [8, 16, 24], "fc": 16, "pretrain_epochs": 0},
}
SMALL_APP = {  # three blocks: two are too shallow to place separable()'s bands (both learn nothing in 8 epochs)
    "skipnet": {"channels": [8, 16, 24], "skip_dim": 8},
    "plaincnn": {"channels": [8, 16, 24]},
}


def template_landmarks(size: int) -> np.ndarray:
    """The canonical face's 68 points in an aligned crop of ``size`` px (the default alignment)."""
    return crop_template(AlignConfig(size=size)).astype(np.float32)


def model_cfg(name: str, size: int, streams: str = "appearance", **kw) -> ModelConfig:
    app = {"name": name, "options": SMALL.get(name, {}), "dropout": 0.1, **SMALL_APP.get(name, {})}
    base = {"streams": streams, "appearance": app, "geometry": {"hidden": 8}, "input": {"size": size}}
    base.update(kw)
    return ModelConfig.model_validate(base)


def with_extras(name: str, app: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
    """``app`` + whatever the network declares (pcnn: region masks from the template face, jittered)."""
    cfg = model_cfg(name, app.shape[-1])
    if landmarks is None:
        base = template_landmarks(app.shape[-1])
        shifts = np.random.default_rng(0).uniform(-2, 2, size=(len(app), 1, 2)).astype(np.float32)
        landmarks = base[None] + shifts
    return append_extras(app, landmarks, needs_of(cfg).extras)


# --- registry and shape contract --------------------------------------------------------------------------------


def test_needs_are_read_from_the_registration() -> None:
    assert needs_of(model_cfg("pcnn", 32)) == ModelNeeds(extras=("face_regions",))
    assert needs_of(model_cfg("fn2en", 32, streams="fused")) == ModelNeeds(targets=("face_descriptor",))
    assert needs_of(model_cfg("dtan", 32)) == ModelNeeds()
    assert needs_of(model_cfg("pcnn", 32, streams="geometry")) == ModelNeeds()  # no appearance stream
    assert extra_channels(("face_regions",)) == N_REGIONS == len(REGION_NAMES)

    def plain(cfg, ctx):
        return torch.nn.Linear(1, 1)

    register_model(
        "appearance", "needy_test_net", input_extras=("face_regions",), training_targets=("face_descriptor",)
    )(plain)
    register_model("appearance", "unknown_extra_test_net", input_extras=("no_such_extra",))(plain)
    try:
        cfg = model_cfg("needy_test_net", 32, streams="fused")
        assert needs_of(cfg) == ModelNeeds(("face_regions",), ("face_descriptor",))
        # fused with pcnn's needs: the union, in a fixed order, each name once
        both = needs_of(cfg) | needs_of(model_cfg("pcnn", 32))
        assert both == ModelNeeds(("face_regions",), ("face_descriptor",))
        with pytest.raises(StageError, match="unknown appearance extra 'no_such_extra'"):
            needs_of(model_cfg("unknown_extra_test_net", 32))
    finally:
        unregister_model("appearance", "needy_test_net")
        unregister_model("appearance", "unknown_extra_test_net")
    with pytest.raises(ValueError, match="geometry networks cannot declare appearance extras"):
        register_model("geometry", "bad_test_net", input_extras=("face_regions",))(plain)
    assert "bad_test_net" not in list_models("geometry")


@pytest.mark.parametrize("name", APPEARANCE)
@pytest.mark.parametrize(("c", "size"), [(1, 32), (3, 64), (6, 48)])
def test_shape_contract(name: str, c: int, size: int) -> None:
    k, length = 5, 8
    app = with_extras(name, np.random.default_rng(1).uniform(size=(3, c, size, size)).astype(np.float32))
    torch.manual_seed(0)
    model = build_model(model_cfg(name, size, streams="fused"), k, app.shape[1], length).eval()
    traj = torch.randn(3, length, 68, 2)
    out = model(torch.as_tensor(app), traj)
    assert {key: v.shape for key, v in out.items()} == {key: (3, k) for key in ("appearance", "geometry", "fused")}
    # eval mode: a sample's result does not depend on the rest of the batch
    alone = torch.cat([model(torch.as_tensor(app[i : i + 1]), traj[i : i + 1])["fused"] for i in range(3)])
    torch.testing.assert_close(alone, out["fused"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GEOMETRY)
def test_geometry_contract(name: str) -> None:
    """Every registered geometry network: [B, L, 68, 2] -> logits [B, K], per-sample results independent of the
    batch in eval mode, the same weights for a seed, another length handled or refused with a StageError, and a
    short training on class-specific motion lowers the loss."""
    k, length = 3, 6
    cfg = ModelConfig.model_validate(
        {"streams": "geometry", "geometry": {"name": name, "hidden": 16, "flat_hidden": [32, 32]}, "input": {"size": 8}}
    )
    torch.manual_seed(0)
    model = build_model(cfg, k, 1, length).eval()
    traj = torch.randn(3, length, 68, 2) * 0.05
    out = model(None, traj)
    assert {key: v.shape for key, v in out.items()} == {"geometry": (3, k)}
    alone = torch.cat([model(None, traj[i : i + 1])["geometry"] for i in range(3)])
    torch.testing.assert_close(alone, out["geometry"], rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    torch.testing.assert_close(build_model(cfg, k, 1, length).eval()(None, traj)["geometry"], out["geometry"])
    try:
        other = model(None, torch.randn(2, length + 3, 68, 2))
    except StageError:
        pass
    else:
        assert other["geometry"].shape == (2, k)

    rng = np.random.default_rng(0)
    y = np.arange(48) % k
    moves = rng.normal(scale=0.02, size=(48, length, 68, 2)).astype(np.float32)
    ramp = np.linspace(0.0, 0.3, length, dtype=np.float32)[:, None]
    for i, c in enumerate(y):  # class 0: mouth opens (down), 1: brows rise, 2: still
        if c < 2:
            group = slice(48, 68) if c == 0 else slice(17, 27)
            moves[i, :, group, 1] += ramp * (1 if c == 0 else -1)
    data = ArrayDataset(np.zeros((48, 1, 8, 8), np.float32), moves, y.astype(np.int64))
    result = fit(cfg, k, data, None, TrainConfig(epochs=8, batch_size=16, lr=1e-2), seed=0)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize(
    ("name", "options", "size", "match"),
    [
        ("dtan", {"bogus": 1}, 64, "bad options"),
        ("dtan", {}, 12, "too small"),
        ("dba", {}, 8, "smaller than"),
        ("resmask", {"mask_depths": [1, 1]}, 64, "mask_depths"),
        ("pcnn", {}, 64, "mask channels"),  # no masks appended: only 3 channels
        ("fn2en", {"pretrain_loss": "l1"}, 64, "bad options"),
    ],
)
def test_builders_reject_what_they_cannot_honour(name: str, options: dict, size: int, match: str) -> None:
    cfg = ModelConfig.model_validate(
        {"streams": "appearance", "appearance": {"name": name, "options": options}, "input": {"size": size}}
    )
    with pytest.raises(StageError, match=match):
        build_model(cfg, 3, 3)


# --- dba: densely backward attention ----------------------------------------------------------------------------


def test_dba_higher_stage_attention_reweights_lower_stages() -> None:
    torch.manual_seed(0)
    net = DBANet(2, 4, widths=(8, 12, 16, 24), stem=8).eval()
    x = torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        pooled, att = net.attention(x)
        feats = net.features(x)
        assert [a.shape[1] for a in att] == [8, 12, 16, 24]
        assert all(((a > 0) & (a < 1)).all() for a in att)
        torch.testing.assert_close(feats[0], pooled[0] * att[0])
        # change only the DEEPEST stage's squeeze-excitation: the shallowest stage's output changes ...
        net.se[3].net[2].bias.add_(3.0)
        pooled2, att2 = net.attention(x)
        feats2 = net.features(x)
    torch.testing.assert_close(pooled2[0], pooled[0])  # ... while its raw features do not (no feedback) ...
    assert (feats2[0] - feats[0]).abs().max() > 1e-3
    assert (att2[2] - att[2]).abs().max() > 1e-3
    with torch.no_grad():  # ... and a SHALLOW stage's vector never reaches a deeper stage (backward only)
        net.se[0].net[2].bias.add_(3.0)
        _, att3 = net.attention(x)
    torch.testing.assert_close(att3[3], att2[3])
    assert (att3[0] - att2[0]).abs().max() > 1e-3


# --- resmask: residual masking ----------------------------------------------------------------------------------


def test_resmask_mask_in_unit_interval_and_identity_path_kept() -> None:
    torch.manual_seed(0)
    net = ResMaskNet(1, 3, 32, widths=(8, 12, 16, 24), stem=8).eval()
    x = torch.cat([torch.rand(2, 1, 32, 32), torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)])
    with torch.no_grad():
        maps = net.stage_maps(x)
        for f, m, out in maps:
            assert m.shape == f.shape
            assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
            torch.testing.assert_close(out, f + f * m)
        # a mask of zeros leaves exactly the backbone: F + F * 0 = F, stage after stage
        for block in net.masks:
            block.out.weight.zero_()
            block.out.bias.fill_(-1e4)
        h = net.backbone.stem(net.norm(x))
        for (f, m, out), stage in zip(net.stage_maps(x), net.backbone.stages, strict=True):
            h = stage(h)
            assert float(m.max()) == 0.0
            torch.testing.assert_close(out, h)
            torch.testing.assert_close(f, h)


def test_resmask_depth_shrinks_for_small_maps() -> None:
    net = ResMaskNet(1, 3, 16, widths=(8, 8, 8, 8), stem=4, mask_depths=(4, 4, 4, 4))
    assert [len(m.down) for m in net.masks] == [3, 2, 1, 0]  # maps of 8, 4, 2, 1 px
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 3)


# --- pcnn: landmark-cut regions ---------------------------------------------------------------------------------


def test_region_boxes_follow_the_landmarks() -> None:
    pts = template_landmarks(64)
    boxes = region_boxes(pts, 64)
    assert boxes.shape == (N_REGIONS, 4)
    moved = region_boxes(pts + np.float32([5, -3]), 64)
    np.testing.assert_allclose(moved, boxes + np.float32([5, -3, 5, -3]), atol=1e-5)
    sides = boxes[:, 2:] - boxes[:, :2]
    np.testing.assert_allclose(sides[:, 0], sides[:, 1], atol=1e-5)  # squares
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    eye_r, eye_l, cheek_r, cheek_l, mouth = (centres[REGION_NAMES.index(n)] for n in REGION_NAMES)
    assert eye_r[0] < 32 < eye_l[0] and cheek_r[0] < 32 < cheek_l[0]  # subject's right = image left
    assert eye_r[1] < cheek_r[1] < mouth[1]
    # a wider mouth gives a wider mouth box
    wide = pts.copy()
    wide[48, 0] -= 4
    wide[54, 0] += 4
    assert np.diff(region_boxes(wide, 64)[4, ::2]) > np.diff(boxes[4, ::2])


def test_masks_round_trip_to_boxes_and_patches_cut_the_landmarked_place() -> None:
    size = 64
    pts = template_landmarks(size)
    masks = torch.as_tensor(region_masks(pts, size))[None]
    assert masks.shape == (1, N_REGIONS, size, size) and set(masks.unique().tolist()) <= {0.0, 1.0}
    got = boxes_from_masks(masks)[0].numpy()
    want = region_boxes(pts, size)
    assert np.abs(got - want).max() <= 1.0  # masks quantise boxes to whole pixels
    # paint the mouth region bright: the mouth patch is bright, the eye patches are not; move both, same patches
    img = np.zeros((1, 1, size, size), np.float32)
    x0, y0, x1, y1 = np.rint(got[4]).astype(int)
    img[0, 0, y0:y1, x0:x1] = 1.0
    patches = crop_patches(torch.as_tensor(img), torch.as_tensor(got)[None], 12)[0, :, 0]
    assert patches[4].mean() > 0.95 and patches[0].mean() < 0.05 and patches[1].mean() < 0.05
    shifted_pts = pts + np.float32([6, 4])
    shifted_img = np.roll(img, (4, 6), axis=(2, 3))
    shifted_masks = torch.as_tensor(region_masks(shifted_pts, size))[None]
    shifted_patches = crop_patches(torch.as_tensor(shifted_img), boxes_from_masks(shifted_masks), 12)[0, :, 0]
    torch.testing.assert_close(shifted_patches, patches)


def test_pcnn_reads_regions_from_its_mask_channels() -> None:
    size = 48
    pts = np.stack([template_landmarks(size), template_landmarks(size) + np.float32([4, 2])])
    frames = np.random.default_rng(0).uniform(size=(2, 2, size, size)).astype(np.float32)
    x = torch.as_tensor(append_extras(frames, pts, ("face_regions",)))
    net = PCNN(x.shape[1], 3, size, global_channels=(8,), local_channels=(8,), fusion_dim=8).eval()
    assert net.image_channels == 2 and net.patch_size == 18
    boxes, patches = net.regions(x)
    assert patches.shape == (2, N_REGIONS, 2, 18, 18)
    np.testing.assert_allclose(boxes[1] - boxes[0], np.tile([4, 2], 2)[None].repeat(N_REGIONS, 0), atol=1)
    with torch.no_grad():
        torch.testing.assert_close(patches[0], crop_patches(net.norm(x[:1, :2]), boxes[:1], 18)[0])
    with pytest.raises(StageError, match="mask channels"):
        net(x[:, :-1])


def test_peak_landmarks_land_where_the_resized_crop_shows_them() -> None:
    """The appearance input and the landmark extras use the same pixel geometry (112 px crop -> 56 px input)."""
    crop, size = 112, 56
    aligned = np.zeros((2, crop, crop), np.uint8)
    lm = np.tile(template_landmarks(crop), (2, 1, 1))
    x, y = 70.5, 40.5  # between crop pixels 70/71 and 40/41: one input pixel after 2x area resizing
    lm[1, 48] = (x, y)
    aligned[1, 40:42, 70:72] = 255
    rec = SequenceRecord(
        "s",
        np.arange(2),
        np.arange(2) / 30.0,
        lm,
        np.array([True, True]),
        np.ones(2, np.float32),
        aligned,
        lm,
        np.zeros((4, 68, 2), np.float32),
    )
    cfg = ModelInputConfig(appearance="peak", size=size)
    app = appearance_input(rec.aligned, rec.success, cfg)[0]
    px = peak_landmarks(rec, cfg)[48]
    yy, xx = np.unravel_index(np.argmax(app), app.shape)
    np.testing.assert_allclose(px, (xx, yy), atol=1e-4)
    assert build_landmarks([rec, rec], cfg).shape == (2, 68, 2)


def test_pcnn_patches_follow_augmentation() -> None:
    """Masks are pixels: flipping the input moves the mask with the face, so the patch is the mirrored one."""
    size = 48
    pts = template_landmarks(size)[None] + np.float32([3, 0])  # off-centre so the flip moves the boxes
    frames = np.random.default_rng(1).uniform(size=(1, 1, size, size)).astype(np.float32)
    x = torch.as_tensor(append_extras(frames, pts, ("face_regions",)))
    net = PCNN(x.shape[1], 3, size, global_channels=(8,), local_channels=(8,), normalize="fixed").eval()
    boxes, patches = net.regions(x)
    fboxes, fpatches = net.regions(x.flip(-1))
    np.testing.assert_allclose(fboxes[0, :, 0], size - boxes[0, :, 2], atol=1e-5)
    torch.testing.assert_close(fpatches[0], patches[0].flip(-1), rtol=1e-4, atol=1e-4)


# --- fn2en: two-stage training ----------------------------------------------------------------------------------


def descriptor_data(n: int, seed: int, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Four 'identities' (stripe textures: horizontal, vertical, diagonal, checker) with a unit descriptor each."""
    rng = np.random.default_rng(seed)
    ident = np.arange(n) % 4
    yy, xx = np.mgrid[:size, :size]
    textures = [(yy // 2) % 2, (xx // 2) % 2, ((xx + yy) // 2) % 2, ((xx // 3) + (yy // 3)) % 2]
    app = rng.uniform(0, 0.3, size=(n, 1, size, size)).astype(np.float32)
    for i, k in enumerate(ident):
        app[i, 0] += 0.6 * textures[k]
    desc = np.random.default_rng(99).normal(size=(4, DESCRIPTOR_DIM))[ident].astype(np.float32)
    return app, desc / np.linalg.norm(desc, axis=1, keepdims=True)


def test_fn2en_stage_one_regresses_descriptors() -> None:
    app, desc = descriptor_data(48, 0)
    torch.manual_seed(0)
    net = FN2EN(1, 3, 24, channels=(8, 16), pretrain_epochs=12, pretrain_lr=3e-3)
    cfg = TrainConfig(batch_size=16, augment=NO_AUGMENT)
    head_before = [p.clone() for p in net.head.parameters()]
    rows = pretrain(net, "appearance", torch.as_tensor(app), None, {"face_descriptor": desc}, cfg, seed=0)
    assert len(rows) == 12 and rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert {r["stream"] for r in rows} == {"appearance"}
    assert all(torch.equal(a, b) for a, b in zip(head_before, net.head.parameters(), strict=True))  # stage 2 only
    with pytest.raises(StageError, match="face_descriptor"):
        pretrain(net, "appearance", torch.as_tensor(app), None, {}, cfg, seed=0)
    with pytest.raises(StageError, match="targets must be"):
        pretrain(net, "appearance", torch.as_tensor(app), None, {"face_descriptor": desc[:5]}, cfg, seed=0)
    net.pretrain_epochs = 0  # configured off: no stage, no error for missing targets
    assert pretrain(net, "appearance", torch.as_tensor(app), None, {}, cfg, seed=0) == []


def test_fit_runs_fn2en_stage_one_on_the_training_split() -> None:
    app, desc = descriptor_data(40, 1)
    labels = (np.arange(40) % 2).astype(np.int64)
    train = ArrayDataset(app, np.zeros((40, 2, 68, 2), np.float32), labels, {"face_descriptor": desc})
    cfg = model_cfg("fn2en", 24, input={"size": 24, "appearance": "peak"})
    cfg.appearance.options = {**SMALL["fn2en"], "pretrain_epochs": 3}
    result = fit(cfg, 2, train, None, TrainConfig(epochs=2, batch_size=16), seed=0)
    assert [r["epoch"] for r in result.pretrain_history] == [1, 2, 3] and len(result.history) == 2
    with pytest.raises(StageError, match="face_descriptor"):
        fit(cfg, 2, ArrayDataset(app, train.trajectory, labels), None, TrainConfig(epochs=1), seed=0)
    with pytest.raises(StageError, match="rows"):
        ArrayDataset(app, train.trajectory, labels, {"face_descriptor": desc[:3]})


def test_face_descriptors_are_cached_per_sequence(tmp_path) -> None:
    class Stub:
        path = descriptor_model_path()
        calls = 0

        def __call__(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
            Stub.calls += 1
            return np.full(DESCRIPTOR_DIM, crop.mean(), np.float32)

    lm = np.tile(template_landmarks(32), (3, 1, 1))
    recs = [
        SequenceRecord(
            f"s{i}",
            np.arange(3),
            np.arange(3) / 30.0,
            lm,
            np.array([True, True, False]),
            np.ones(3, np.float32),
            np.full((3, 32, 32), 10 * (i + 1) + np.arange(3)[:, None, None], np.uint8),
            lm,
            np.zeros((4, 68, 2), np.float32),
        )
        for i in range(2)
    ]
    first = face_descriptors(recs, tmp_path, Stub())
    assert Stub.calls == 2 and first[:, 0].tolist() == [11.0, 21.0]  # frame 1: the last successful one
    again = face_descriptors(recs, tmp_path, Stub())
    assert Stub.calls == 2 and np.array_equal(again, first)


def test_dlib_descriptor_of_real_faces(shared_dir) -> None:
    from stages.preprocess.landmarks.provided.readers import read_pts

    try:
        describer = FaceDescriber()
    except MissingWeightsError as exc:
        pytest.skip(str(exc))
    files = sorted((shared_dir / "faces").glob("*.jpg"))[:2]
    crops = []
    for f in files:
        image = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2GRAY)
        crops.append(align_face(image, read_pts(f.with_suffix(".pts")), AlignConfig(size=112)))
    a, b = (describer(c.image, c.points) for c in crops)
    assert a.shape == (DESCRIPTOR_DIM,) and np.isfinite(a).all()
    mirrored = describer(crops[0].image[:, ::-1].copy(), mirror_points(crops[0].points, 112))
    # the same person mirrored is close, another person far (dlib's threshold for "same" is 0.6; measured on
    # 6 of these faces: mirrored 0.15-0.25, others 0.69-0.91)
    assert np.linalg.norm(a - mirrored) < 0.4 < np.linalg.norm(a - b)
    assert build_targets([], ()) == {}


# --- every network trains ---------------------------------------------------------------------------------------


def separable(n: int, seed: int, size: int = 32) -> ArrayDataset:
    """Class c: a bright horizontal band in a class-specific rows range (survives flips and small shifts)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    app = rng.uniform(0.0, 0.4, size=(n, 2, size, size)).astype(np.float32)
    for i, c in enumerate(y):
        app[i, :, 6 + 8 * c : 12 + 8 * c, :] += 0.5
    return ArrayDataset(app, rng.normal(scale=0.05, size=(n, 4, 68, 2)).astype(np.float32), y.astype(np.int64))


@pytest.mark.parametrize("name", APPEARANCE)
def test_short_training_lowers_the_loss(name: str) -> None:
    data = separable(48, 0)
    data.appearance = with_extras(name, data.appearance)
    cfg = model_cfg(name, 32)
    result = fit(cfg, 3, data, None, TrainConfig(epochs=8, batch_size=16, lr=1e-2), seed=0)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    proba = predict_proba(result.model, data)
    assert proba.shape == (48, 3) and np.allclose(proba.sum(1), 1.0)


def test_pcnn_and_fn2en_training_is_deterministic() -> None:
    data = separable(24, 3)
    data.appearance = with_extras("pcnn", data.appearance)
    runs = [fit(model_cfg("pcnn", 32), 3, data, None, TrainConfig(epochs=2, batch_size=8), seed=5) for _ in range(2)]
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]
    app, desc = descriptor_data(24, 2)
    train = ArrayDataset(app, np.zeros((24, 2, 68, 2), np.float32), np.arange(24) % 3, {"face_descriptor": desc})
    cfg = model_cfg("fn2en", 24)
    cfg.appearance.options = {**SMALL["fn2en"], "pretrain_epochs": 2}
    runs = [fit(cfg, 3, train, None, TrainConfig(epochs=2, batch_size=8), seed=5) for _ in range(2)]
    assert runs[0].pretrain_history[-1]["loss"] == runs[1].pretrain_history[-1]["loss"]
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]


def test_prediction_inputs_carry_the_extras() -> None:
    size = 32
    lm = np.tile(template_landmarks(64), (3, 1, 1))
    aligned = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64), dtype=np.uint8)
    rec = SequenceRecord(
        "s",
        np.arange(3),
        np.arange(3) / 30.0,
        lm,
        np.ones(3, bool),
        np.ones(3, np.float32),
        aligned,
        lm,
        np.zeros((4, 68, 2), np.float32),
    )
    app, traj = build_model_inputs([rec], model_cfg("pcnn", size, input={"size": size, "k": 2}))
    assert app.shape == (1, 2 + N_REGIONS, size, size) and traj.shape == (1, 4, 68, 2)
    np.testing.assert_array_equal(app[0, 2:], region_masks(peak_landmarks(rec, ModelInputConfig(size=size)), size))
    app, _ = build_model_inputs([rec], model_cfg("dtan", size, input={"size": size, "k": 2}))
    assert app.shape == (1, 2, size, size)


def test_dtagn_is_one_config_dtan_flat_joint_loss() -> None:
    cfg = ModelConfig.model_validate(
        {
            "streams": "fused",
            "appearance": {"name": "dtan", "options": {"channels": [8, 8], "fc": 32}},
            "geometry": {"name": "flat", "flat_hidden": [100, 600]},
            "fusion": "sum",
            "joint_loss": True,
            "input": {"appearance": "last_k", "k": 2, "size": 32},
        }
    )
    data = separable(36, 1)
    model = build_model(cfg, 3, 2, 4)
    out = model(torch.as_tensor(data.appearance[:4]), torch.as_tensor(data.trajectory[:4]))
    y = torch.as_tensor(data.labels[:4])
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(model.loss(out, y), sum(ce(out[k], y) for k in ("appearance", "geometry", "fused")))
    torch.testing.assert_close(out["fused"], 0.5 * out["appearance"] + 0.5 * out["geometry"])
    result = fit(cfg, 3, data, None, TrainConfig(epochs=5, batch_size=12, lr=3e-3), seed=0)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_fn2en_stage_one_runs_per_frame_under_frame_averaging() -> None:
    """appearance: frames wraps fn2en in FrameAveraged; its first stage then sees every frame as a sample that
    regresses its sequence's descriptor (frames stacked frame-major in the channels, as model inputs are)."""
    app1, desc = descriptor_data(40, 2)
    app = np.concatenate([app1, app1[:, :, ::-1].copy()], axis=1)  # 2 frames per sequence: the stripes and a flip
    labels = (np.arange(40) % 2).astype(np.int64)
    train = ArrayDataset(app, np.zeros((40, 2, 68, 2), np.float32), labels, {"face_descriptor": desc})
    cfg = model_cfg("fn2en", 24, input={"size": 24, "appearance": "frames", "k": 2})
    cfg.appearance.options = {**SMALL["fn2en"], "pretrain_epochs": 3}
    result = fit(cfg, 2, train, None, TrainConfig(epochs=1, batch_size=16, augment=NO_AUGMENT), seed=0)
    assert [r["epoch"] for r in result.pretrain_history] == [1, 2, 3]
    wrapper = result.model.appearance
    plan = wrapper.pretraining({"face_descriptor": desc}, 40, "cpu")
    inner = wrapper.net.pretraining({"face_descriptor": desc}, 40, "cpu")
    x, t = torch.as_tensor(app[:4]), plan.target[:4]
    wrapper.eval()
    flat = x.reshape(8, 1, 24, 24)  # frame-major: sequence 0 frame 0, sequence 0 frame 1, ...
    torch.testing.assert_close(plan.loss(x, t), inner.loss(flat, t.repeat_interleave(2, dim=0)))
