"""Training data held compactly: uint8 grey levels made float per batch give bit-identical inputs, training and
predictions; inputs that are not whole grey levels (face mask, extras) stay float."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.labelled import LabelledData, load_labelled_npz, save_labelled_data
from stages.learning.inputs.extras import append_extras, model_inputs
from stages.learning.inputs.streams import appearance_input, build_stream_inputs
from stages.learning.models import ModelConfig, ModelInputConfig, TrainConfig
from stages.learning.training.dataset import ArrayDataset, appearance_float, to_device, to_tensors
from stages.learning.training.fit import fit
from stages.learning.training.predict import predict_proba
from stages.record import SequenceRecord

S = 16
K = 3


def test_appearance_float_is_numpys_division_bit_for_bit() -> None:
    levels = np.random.default_rng(0).integers(0, 256, size=100_003, dtype=np.uint8)
    levels[:256] = np.arange(256)
    expected = levels.astype(np.float32) / np.float32(255.0)
    got = appearance_float(torch.from_numpy(levels)).numpy()
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    floats = torch.rand(4, 3)
    assert appearance_float(floats) is floats  # float input: no copy


def test_to_device_keeps_uint8_and_to_tensors_makes_float() -> None:
    app = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    traj = np.zeros((2, 3, 68, 2), np.float64)
    held, t = to_device((app, traj), "cpu")
    assert held.dtype == torch.uint8 and t.dtype == torch.float32
    assert held.data_ptr() == torch.from_numpy(app).data_ptr()  # shared on the CPU, not copied
    f, _ = to_tensors((app, traj), "cpu")
    assert f.dtype == torch.float32 and torch.equal(f, torch.from_numpy(app.astype(np.float32) / np.float32(255)))


def _record(seed: int, t: int = 4, side: int = 24) -> SequenceRecord:
    rng = np.random.default_rng(seed)
    pts = np.array([[12.0, 12.0]], np.float32) + rng.normal(scale=4.0, size=(t, 68, 2)).astype(np.float32)
    pts[:, 0:17, 1] += 6.0  # a jaw below the brows (face_region needs chin and nose root apart)
    return SequenceRecord(
        sequence_id=f"s{seed}",
        frame_indices=np.arange(t, dtype=np.int64),
        timestamps=np.arange(t, dtype=np.float64) / 30,
        landmarks=pts,
        success=np.ones(t, bool),
        confidence=np.ones(t, np.float32),
        aligned=rng.integers(0, 256, size=(t, side, side), dtype=np.uint8),
        aligned_landmarks=pts.copy(),
        trajectory=rng.normal(size=(5, 68, 2)).astype(np.float32),
    )


def test_compact_input_is_the_float_input_exactly() -> None:
    records = [_record(i) for i in range(3)]
    cfg = ModelInputConfig(appearance="last_k", k=2, size=S)  # 24 px crops resized to 16: cv2 on uint8
    u8, traj8 = build_stream_inputs(records, cfg, compact=True)
    f32, traj = build_stream_inputs(records, cfg)
    assert u8.dtype == np.uint8 and f32.dtype == np.float32
    assert np.array_equal((u8.astype(np.float32) / np.float32(255.0)).view(np.uint32), f32.view(np.uint32))
    assert np.array_equal(traj8, traj)
    app, _, landmarks = model_inputs(records, cfg)  # the shared path holds it compactly by default
    assert app.dtype == np.uint8 and np.array_equal(app, u8)
    with_extras = append_extras(app, landmarks, ("face_regions",))  # extras are float: all of it float
    assert with_extras.dtype == np.float32 and np.array_equal(with_extras[:, :2], f32)
    assert model_inputs(records, cfg, ("face_regions",))[0].dtype == np.float32


def test_face_mask_input_stays_float() -> None:
    rec = _record(5)
    cfg = ModelInputConfig(appearance="last_k", k=2, size=S, mask="face")
    compact = appearance_input(rec.aligned, rec.success, cfg, rec.aligned_landmarks, compact=True)
    assert compact.dtype == np.float32
    assert np.array_equal(compact, appearance_input(rec.aligned, rec.success, cfg, rec.aligned_landmarks))


def _data(n: int, seed: int) -> ArrayDataset:
    """Class c: a bright band in rows 4c..4c+3, as uint8 grey levels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    app = rng.integers(0, 100, size=(n, 2, S, S), dtype=np.uint8)
    for i, c in enumerate(y):
        app[i, :, 4 * c : 4 * c + 4, :] += 120
    traj = rng.normal(scale=0.05, size=(n, 6, 68, 2)).astype(np.float32)
    return ArrayDataset(app, traj, y.astype(np.int64))


def _as_float(d: ArrayDataset) -> ArrayDataset:
    return ArrayDataset(d.appearance.astype(np.float32) / np.float32(255.0), d.trajectory, d.labels)


@pytest.mark.parametrize("augment", [{}, {"contrast": 0.2, "gamma": 0.2, "blur": 1.0, "erase": 0.5}])
def test_uint8_training_is_float_training_bit_for_bit(augment: dict) -> None:
    train, val = _data(40, 0), _data(20, 1)
    mcfg = ModelConfig.model_validate(
        {
            "appearance": {"channels": [8, 16], "skip_dim": 8, "dropout": 0.1},
            "geometry": {"hidden": 16, "dropout": 0.1},
            "input": {"appearance": "last_k", "k": 2, "size": S},
        }
    )
    tcfg = TrainConfig.model_validate({"epochs": 3, "batch_size": 16, "lr": 3e-3, "augment": augment})
    runs = [fit(mcfg, K, t, v, tcfg, seed=4) for t, v in ((train, val), (_as_float(train), _as_float(val)))]
    strip = [[{k: x for k, x in h.items() if k != "seconds"} for h in r.history] for r in runs]
    assert strip[0] == strip[1]
    for (name, a), (_, b) in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    p8, p32 = predict_proba(runs[0].model, val), predict_proba(runs[0].model, _as_float(val))
    assert np.array_equal(p8, p32)


def test_prepared_file_keeps_the_held_dtype(tmp_path) -> None:
    d = _data(6, 2)
    data = LabelledData(
        sequence_ids=np.array([f"s{i}" for i in range(6)]),
        subjects=np.array([f"S{i}" for i in range(6)]),
        folds=np.arange(6) % 2,
        labels=d.labels,
        appearance=d.appearance,
        trajectory=d.trajectory,
        classes=["a", "b", "c"],
        excluded=pd.DataFrame(),
    )
    back = load_labelled_npz(save_labelled_data(tmp_path / "u8.npz", data, "k"))
    assert back.appearance.dtype == np.uint8 and np.array_equal(back.appearance, data.appearance)
    data.appearance = _as_float(d).appearance
    back = load_labelled_npz(save_labelled_data(tmp_path / "f32.npz", data, "k"))
    assert back.appearance.dtype == np.float32 and np.array_equal(back.appearance, data.appearance)
