"""Training loop, prediction and checkpoints on a tiny synthetic, separable data set."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from stages.errors import StageError
from stages.learning.models import ModelConfig, TrainConfig
from stages.learning.training.checkpoint import load_checkpoint, save_checkpoint
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.fit import fit
from stages.learning.training.precision import resolve_precision
from stages.learning.training.predict import EXACT_CHUNK, predict_proba

K = 3
S = 16
L = 6
CLASSES = ["anger", "happy", "surprise"]
MOVING = [5, 6, 7, 8, 9, 10, 11, *range(48, 68)]  # lower jaw and mouth: a symmetric set of points


def make_data(n: int, seed: int) -> ArrayDataset:
    """Class c: a bright horizontal band in rows 4c..4c+3 and a vertical move of the mouth and chin by
    0.3 (c - 1) growing over time: both survive the horizontal flip, so augmentation keeps the labels right."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    app = rng.uniform(0.0, 0.4, size=(n, 2, S, S)).astype(np.float32)
    traj = rng.normal(scale=0.05, size=(n, L, 68, 2)).astype(np.float32)
    for i, c in enumerate(y):
        app[i, :, 4 * c : 4 * c + 4, :] += 0.5
        traj[i][:, MOVING, 1] += 0.3 * (c - 1) * np.linspace(0, 1, L)[:, None]
    return ArrayDataset(app, traj, y.astype(np.int64))


def model_cfg(**kw) -> ModelConfig:
    base = {
        "appearance": {"channels": [8, 16], "skip_dim": 8, "dropout": 0.1},
        "geometry": {"hidden": 16, "dropout": 0.1},
        "input": {"appearance": "last_k", "k": 2, "size": S},
    }
    base.update(kw)
    return ModelConfig.model_validate(base)


def train_cfg(**kw) -> TrainConfig:
    base = {"epochs": 12, "batch_size": 16, "lr": 3e-3, "patience": 12}
    base.update(kw)
    return TrainConfig.model_validate(base)


@pytest.fixture(scope="module")
def data() -> tuple[ArrayDataset, ArrayDataset]:
    return make_data(60, seed=0), make_data(30, seed=1)


@pytest.fixture(scope="module")
def trained(data):
    train, val = data
    rows = []
    threads = torch.get_num_threads()
    result = fit(model_cfg(), K, train, val, train_cfg(), seed=7, on_epoch=rows.append)
    assert torch.get_num_threads() == threads  # restored after fit
    return result, rows


def test_training_learns(trained) -> None:
    result, rows = trained
    hist = result.history
    assert rows == hist  # on_epoch saw every row
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
    assert set(hist[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]
    assert max(h["val_acc"] for h in hist) >= 0.8  # chance is 1/3


@pytest.mark.parametrize("streams", ["appearance", "geometry"])
def test_single_streams_learn(data, streams: str) -> None:
    train, val = data
    result = fit(model_cfg(streams=streams), K, train, val, train_cfg(epochs=8), seed=1)
    assert result.model.prediction_key == streams
    assert max(h["val_acc"] for h in result.history) >= 0.7


def test_best_epoch_is_chosen_on_validation(data, trained) -> None:
    result, _ = trained
    hist = result.history
    best = max(hist, key=lambda h: (h["val_acc"], -h["val_loss"]))
    assert result.best_epoch == best["epoch"]
    # the returned weights are that epoch's: they reproduce its validation accuracy
    val = data[1]
    acc = (predict_proba(result.model, val).argmax(1) == val.labels).mean()
    assert acc == pytest.approx(best["val_acc"])
    assert not result.model.training


def test_early_stopping(data) -> None:
    train, val = data
    result = fit(model_cfg(), K, train, val, train_cfg(epochs=30, patience=2, lr=1e-2), seed=3)
    assert len(result.history) <= result.best_epoch + 2
    assert len(result.history) < 30


def test_without_validation_keeps_last_epoch(data) -> None:
    train, _ = data
    empty = ArrayDataset(train.appearance[:0], train.trajectory[:0], train.labels[:0])
    result = fit(model_cfg(streams="geometry"), K, train, empty, train_cfg(epochs=3), seed=0)
    assert result.best_epoch == 3 and np.isnan(result.history[-1]["val_acc"])


def test_same_seed_same_history_and_weights(data) -> None:
    train, val = data
    cfg = train_cfg(epochs=2, class_weighted=True)
    mcfg = model_cfg(fusion="learned")
    runs = [fit(mcfg, K, train, val, cfg, seed=11) for _ in range(2)]
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in runs]
    assert strip[0] == strip[1]
    w0, w1 = runs[0].model.state_dict(), runs[1].model.state_dict()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    other = fit(mcfg, K, train, val, cfg, seed=12).model.state_dict()
    assert not all(torch.equal(w0[k], other[k]) for k in w0)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_predict_proba_is_bit_identical_whatever_the_order_or_company(data, trained, precision: str) -> None:
    """Exact mode runs fixed-shape chunks: a sequence's probabilities do not depend on where it sits in the call
    (reversed order moves every sequence to another chunk position) or on the padding of a short last chunk."""
    model, val = trained[0].model, data[1]
    assert len(val) > EXACT_CHUNK  # several chunks, the last one short
    p = predict_proba(model, val, precision=precision)
    reverse = np.arange(len(val))[::-1]
    flipped = predict_proba(model, (val.appearance[reverse], val.trajectory[reverse]), precision=precision)
    assert np.array_equal(flipped[reverse], p)
    assert np.array_equal(predict_proba(model, (val.appearance[3:4], val.trajectory[3:4]), precision=precision), p[3:4])
    if precision == "bfloat16":  # the forward pass really ran in bfloat16: close to float32, not equal
        p32 = predict_proba(model, val)
        assert not np.array_equal(p32, p) and np.abs(p32 - p).max() < 0.05


def test_predict_proba_batch_size_invariant(data, trained) -> None:
    model = trained[0].model
    val = data[1]
    p = {bs: predict_proba(model, val, batch_size=bs) for bs in (1, 7, 128)}
    assert p[1].shape == (len(val), K)
    assert np.array_equal(p[1], p[7]) and np.array_equal(p[1], p[128])
    np.testing.assert_allclose(p[1].sum(axis=1), 1.0, atol=1e-12)
    # a sequence's result does not depend on the others in the call
    assert np.array_equal(predict_proba(model, (val.appearance[5:6], val.trajectory[5:6])), p[1][5:6])
    np.testing.assert_allclose(predict_proba(model, val, batch_size=7, exact=False), p[1], atol=1e-5)
    assert predict_proba(model, (val.appearance[:0], val.trajectory[:0])).shape == (0, K)


def test_checkpoint_round_trip(tmp_path, data, trained) -> None:
    model = trained[0].model
    val = data[1]
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, model_cfg(), CLASSES, {"fold": np.int64(3), "best_epoch": 4}
    )
    loaded, cfg, classes, extra = load_checkpoint(path)
    assert cfg == model_cfg() and classes == CLASSES and extra == {"fold": 3, "best_epoch": 4}
    assert not loaded.training
    assert np.array_equal(predict_proba(loaded, val), predict_proba(model, val))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_flat_geometry_round_trip(tmp_path, data) -> None:
    train, val = data
    mcfg = model_cfg(streams="geometry", geometry={"name": "flat", "flat_hidden": [8]})
    result = fit(mcfg, K, train, val, train_cfg(epochs=1), seed=0)
    loaded, *_ = load_checkpoint(save_checkpoint(tmp_path / "f.safetensors", result.model, mcfg, CLASSES))
    assert np.array_equal(predict_proba(loaded, val), predict_proba(result.model, val))


class _Trap:
    """Unpickling this would create a file: proves the loader never unpickles."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_refuses_pickles(tmp_path, trained) -> None:
    marker = tmp_path / "unpickled"
    torch_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "trap": _Trap(str(marker))}, torch_file)
    raw_file = tmp_path / "model.pkl"
    raw_file.write_bytes(pickle.dumps(_Trap(str(marker))))
    for path in (torch_file, raw_file):
        with pytest.raises(StageError, match="pickled"):
            load_checkpoint(path)
    assert not marker.exists()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(StageError, match="junk.safetensors"):
        load_checkpoint(junk)
    with pytest.raises(StageError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_fit_rejects_bad_inputs(data) -> None:
    train, val = data
    with pytest.raises(StageError, match="labels"):
        fit(model_cfg(), 2, train, val, train_cfg(epochs=1), seed=0)
    with pytest.raises(StageError, match="appearance"):
        fit(model_cfg(input={"size": 32}), K, train, val, train_cfg(epochs=1), seed=0)
    with pytest.raises(StageError, match="disagree"):
        ArrayDataset(train.appearance, train.trajectory[:3], train.labels)


def test_weight_average_warms_up_then_holds_its_decay() -> None:
    """The average's decay starts low (it follows the weights while they move fast) and reaches ema_decay."""
    from stages.learning.training.averaging import ema_decay_at, ema_warmup_avg_fn

    assert ema_decay_at(0.99, 0) == pytest.approx(0.1) and ema_decay_at(0.99, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.99, 10_000) == 0.99 and ema_decay_at(0.5, 100) == 0.5
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema_warmup_avg_fn(0.99)(averaged, current, torch.tensor(1))
    assert torch.allclose(averaged[0], torch.full((3,), 1 - 2 / 11))  # after one step: 82 % of the way


def test_weight_averaging_keeps_the_average_and_resumes_exactly(tmp_path, data, kill_after_epoch) -> None:
    """train.ema_decay: validation judges, and the result holds, the moving average of the weights, not the last
    step's; the run is seeded, and a run killed after an epoch resumes to the same weights."""
    train, val = data
    cfg = train_cfg(epochs=4, ema_decay=0.9)
    plain = fit(model_cfg(), K, train, val, train_cfg(epochs=4), seed=2)
    averaged = fit(model_cfg(), K, train, val, cfg, seed=2)
    again = fit(model_cfg(), K, train, val, cfg, seed=2)
    assert [r["train_loss"] for r in averaged.history] == [r["train_loss"] for r in plain.history]  # same steps
    weights = lambda r: r.model.state_dict()  # noqa: E731
    assert any(not torch.equal(v, weights(plain)[k]) for k, v in weights(averaged).items())
    assert all(torch.equal(v, weights(again)[k]) for k, v in weights(averaged).items())

    killed, after = kill_after_epoch
    state = tmp_path / "state.pt"
    with pytest.raises(killed):
        fit(model_cfg(), K, train, val, cfg, seed=2, on_epoch=after(2), resume_path=state, resume_key="k")
    resumed = fit(model_cfg(), K, train, val, cfg, seed=2, resume_path=state, resume_key="k")
    assert resumed.best_epoch == averaged.best_epoch
    assert all(torch.equal(v, weights(resumed)[k]) for k, v in weights(averaged).items())


def test_bfloat16_training_learns_keeps_float32_weights_and_is_deterministic(data) -> None:
    """``train.precision: bfloat16`` autocasts the training forward pass only: the kept weights are float32,
    the same seed gives the same weights, and the run is not silently the float32 one."""
    train, val = data
    cfg = train_cfg(epochs=6, precision="bfloat16", class_weighted=True)
    runs = [fit(model_cfg(), K, train, val, cfg, seed=5) for _ in range(2)]
    assert runs[0].precision == "bfloat16"
    weights = [r.model.state_dict() for r in runs]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights[0].values())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert max(h["val_acc"] for h in runs[0].history) >= 0.7
    full = fit(model_cfg(), K, train, val, train_cfg(epochs=6, class_weighted=True), seed=5).model.state_dict()
    assert not all(torch.equal(weights[0][k], full[k]) for k in full)
    proba = predict_proba(runs[0].model, val)  # prediction runs in float32 outside autocast
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch, native: bool) -> None:
    """``auto`` follows oneDNN's report of native bf16; explicit settings are kept whatever the CPU, an emulated
    bfloat16 with one warning per process."""
    from stages.learning.training import precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    precision._warn_emulated.cache_clear()
    warned = []
    monkeypatch.setattr(precision.log, "warning", warned.append)
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native else "float32")
    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert warned == ([] if native else [precision.EMULATED])
    precision._warn_emulated.cache_clear()
