"""Issue 27 case 2, training that diverges: a non-finite loss stops that network at once with one error naming the
fold, member and epoch; NaN weights never reach a checkpoint, a model folder or a resumed run.

Before: `seqfer cv --set train.lr=1e6` trained to NaN losses, reported chance accuracy and exited 0, and a model
trained so predicted a class with status ok and no probabilities.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from fixtures_datasets import TINY_MODEL
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_training import CLASSES, K, make_data, model_cfg, train_cfg

import pipeline.cv.folds as cv_folds
import pipeline.train.run as train_run
import stages.learning.training.fit as fit_module
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.cv.run import cv_dir, fold_error, run_cv
from pipeline.data.labelled import load_labelled_data
from stages.errors import StageError
from stages.learning.models import TwoStream
from stages.learning.models.registry import Pretraining
from stages.learning.training.checkpoint import load_checkpoint, save_checkpoint
from stages.learning.training.divergence import EXPLODED_LOSS, TrainingDiverged, loss_diverged, nonfinite_tensors
from stages.learning.training.fit import fit
from stages.learning.training.member import network_name, train_member
from stages.learning.training.pretrain import pretrain
from stages.learning.training.state import load_train_state, save_train_state

REPO = Path(__file__).resolve().parent.parent
DEMO_YAML = str(REPO / "configs" / "demo.yaml")
BLOWN = r"(nan|inf|[-+.e\d]+, above 1e\+06)"
"""How a diverged loss is shown: non-finite, or finite beyond any converging network's."""


@pytest.fixture(scope="module")
def data():
    return make_data(40, seed=0), make_data(20, seed=1)


def test_a_diverging_learning_rate_stops_the_network_naming_fold_and_epoch(data) -> None:
    train, val = data
    with pytest.raises(
        TrainingDiverged, match=rf"^training diverged: fold 3, epoch \d+: the .*loss.* is {BLOWN} "
    ) as err:
        train_member(model_cfg(), K, train, val, train_cfg(lr=1e6, epochs=4), seed=0, member=0, fold=3)
    assert "(lower train.lr, now 1e+06)" in str(err.value)
    assert isinstance(err.value, StageError)  # the CLI prints it as one error line, exit 2


def test_a_finite_loss_that_explodes_has_diverged_too(data) -> None:
    """``train.lr=1e4`` gives batch losses of ~1e14 (a fresh network's is ~1): finite, but no training."""
    train, val = data
    with pytest.raises(TrainingDiverged, match=r"epoch 1: the .*loss.* is [.e\d+]+, above 1e\+06 \(lower train.lr"):
        fit(model_cfg(), K, train, val, train_cfg(lr=1e4, epochs=4), seed=0)
    assert not loss_diverged(3.0, EXPLODED_LOSS) and loss_diverged(2e6, EXPLODED_LOSS) and loss_diverged(math.nan)


def test_an_ensemble_member_is_named(data) -> None:
    train, _ = data
    with pytest.raises(TrainingDiverged, match=r"^training diverged: fold 0, member 2/3, epoch \d+: "):
        train_member(model_cfg(), K, train, None, train_cfg(lr=1e6, epochs=4, ensemble=3), seed=0, member=1, fold=0)
    assert network_name(None, 0, 1) == "" and network_name(None, 1, 2) == "member 2/2"


def test_a_nan_training_loss_in_epoch_2_stops_before_its_step(data, monkeypatch: pytest.MonkeyPatch) -> None:
    train, val = data
    loss, step = TwoStream.loss, torch.optim.AdamW.step
    batches_per_epoch = math.ceil(len(train) / 16)
    calls, steps = [], []

    def nan_in_epoch_2(self, outputs, y, *args, **kwargs):
        value = loss(self, outputs, y, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) == batches_per_epoch + 2:  # the second batch of epoch 2
                return value * math.nan
        return value

    def counted_step(self, *args, **kwargs):
        steps.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(TwoStream, "loss", nan_in_epoch_2)
    monkeypatch.setattr(torch.optim.AdamW, "step", counted_step)
    rows = []
    with pytest.raises(TrainingDiverged) as err:
        fit(model_cfg(), K, train, val, train_cfg(epochs=4), seed=7, on_epoch=rows.append, where="fold 1")
    assert str(err.value).startswith("training diverged: fold 1, epoch 2: the training loss of a batch is nan")
    assert [r["epoch"] for r in rows] == [1]  # stopped at once
    assert len(calls) == batches_per_epoch + 2 and len(steps) == batches_per_epoch + 1  # no step from the NaN


def test_a_nan_validation_loss_stops_the_network(data, monkeypatch: pytest.MonkeyPatch) -> None:
    train, val = data
    evaluate = fit_module.evaluate
    seen = []

    def nan_at_epoch_2(*args, **kwargs):
        seen.append(1)
        loss, acc = evaluate(*args, **kwargs)
        return (math.inf if len(seen) == 2 else loss), acc

    monkeypatch.setattr(fit_module, "evaluate", nan_at_epoch_2)
    with pytest.raises(TrainingDiverged, match=r"^training diverged: epoch 2: the validation loss is inf \("):
        fit(model_cfg(), K, train, val, train_cfg(epochs=4), seed=7)


class _Stage(torch.nn.Module):
    """A stream network with a first training stage whose loss turns NaN in its second epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 1)
        self.calls = 0

    def pretraining(self, targets, n, device):
        def loss(x, target):
            self.calls += 1
            value = ((self.head(x.flatten(1)[:, :4]) - target) ** 2).mean()
            return value * math.nan if self.calls > 3 else value

        return Pretraining(2, 0.5, list(self.head.parameters()), loss, torch.zeros(12, 1))


def test_a_diverging_first_training_stage_names_its_network_and_epoch() -> None:
    app = torch.rand(12, 2, 4, 4)
    with pytest.raises(TrainingDiverged, match=r"^training diverged: fold 2, epoch 2: the first-stage loss of the "):
        pretrain(_Stage(), "appearance", app, None, {}, train_cfg(batch_size=4), seed=0, where="fold 2")


def _tiny_model(data):
    train, val = data
    return fit(model_cfg(), K, train, val, train_cfg(epochs=1), seed=7).model


def test_save_checkpoint_refuses_nan_weights(tmp_path: Path, data) -> None:
    model = _tiny_model(data)
    with torch.no_grad():
        next(model.parameters())[0] = math.nan
    path = tmp_path / "model.safetensors"
    with pytest.raises(StageError, match="not written: its weights are not finite"):
        save_checkpoint(path, model, model_cfg(), CLASSES)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_load_checkpoint_refuses_nan_weights_written_by_an_older_seqfer(tmp_path: Path, data) -> None:
    path = save_checkpoint(tmp_path / "model.safetensors", _tiny_model(data), model_cfg(), CLASSES)
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][...] = math.inf
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(StageError, match=f"weights are not finite .*{name}"):
        load_checkpoint(path)


def test_a_training_state_with_nan_weights_is_not_resumed(tmp_path: Path, data) -> None:
    train, val = data
    state = tmp_path / "train_state.pt"
    args = (model_cfg(), K, train, val, train_cfg(epochs=2), 7)
    first = fit(*args, resume_path=state, resume_key="k")
    saved = load_train_state(state, "k")
    assert saved is not None and saved["epoch"] == 2
    next(iter(saved["model"].values()))[...] = math.nan
    save_train_state(state, saved)
    assert nonfinite_tensors(torch.load(state, weights_only=True)) and load_train_state(state, "k") is None
    rows = []
    again = fit(*args, resume_path=state, resume_key="k", on_epoch=rows.append)
    assert [r["epoch"] for r in rows] == [1, 2]  # started over rather than resumed
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_fold_error_unwraps_a_user_error_from_ray() -> None:
    from ray.exceptions import RayTaskError

    cause = TrainingDiverged("training diverged: fold 1, epoch 2: the validation loss is nan (lower train.lr)")
    wrapped = RayTaskError("FoldWorker.train", "Traceback ...", cause, proctitle="w", pid=1, ip="0.0.0.0")
    assert fold_error(1, wrapped) is cause
    assert fold_error(1, cause.__class__("x")).args == ("x",)
    bug = RayTaskError("FoldWorker.train", "Traceback ...", KeyError("bug"), proctitle="w", pid=1, ip="0.0.0.0")
    assert fold_error(1, bug) is bug


def _tiny_config(tiny_demo: Path, out: Path):
    """A 1-epoch run of the tiny model on the tiny demo (2 folds) into ``out``."""
    overrides = ["data.format=ckplus", f"data.root={tiny_demo}", "data.folds=2", f"output_dir={out}"]
    return load_config(None, [*overrides, "train.epochs=1", "train.batch_size=4", *TINY_MODEL])


def _wrap_train_member(monkeypatch: pytest.MonkeyPatch, module, change) -> None:
    """``module.train_member`` returns ``change(its result, fold)``."""
    real = module.train_member
    monkeypatch.setattr(module, "train_member", lambda *args, **kwargs: change(real(*args, **kwargs), args[7]))


def _raise(error: Exception):
    raise error


def test_finished_folds_stay_when_a_later_fold_diverges(
    tiny_demo: Path, tmp_path: Path, ray_session, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _tiny_config(tiny_demo, tmp_path)
    fold_1 = TrainingDiverged("training diverged: fold 1, epoch 1: the training loss of a batch is nan")
    _wrap_train_member(monkeypatch, cv_folds, lambda result, fold: result if fold == 0 else _raise(fold_1))
    with pytest.raises(TrainingDiverged, match="fold 1, epoch 1"):
        run_cv(cfg, load_labelled_data(cfg), use_ray=False)
    assert (cv_dir(cfg) / "fold_0" / "result.json").is_file()
    assert not (cv_dir(cfg) / "fold_1" / "result.json").exists() and not (cv_dir(cfg) / "summary.json").exists()


def test_train_checks_the_weights_before_writing_its_model_folder(
    tiny_demo: Path, tmp_path: Path, ray_session, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _tiny_config(tiny_demo, tmp_path)

    def nan_weights(result, fold):
        with torch.no_grad():
            next(result.model.parameters()).fill_(math.nan)
        return result

    _wrap_train_member(monkeypatch, train_run, nan_weights)
    written = []
    monkeypatch.setattr(train_run, "write_model_folder", lambda *a, **k: written.append(a))
    with pytest.raises(TrainingDiverged, match="weights are not finite"):
        train_run.run_train(cfg)
    assert not written and not train_run.model_dir(cfg).exists()


@pytest.fixture(scope="module")
def preprocessed(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Path, list[str]]:
    """`seqfer preprocess` of the tiny demo: (its output folder, the --set arguments of a run on it)."""
    out = tmp_path_factory.mktemp("diverge")
    sets = ["data.format=ckplus", f"data.root={tiny_demo}", "data.folds=2", f"output_dir={out}", *TINY_MODEL]
    args = [arg for s in [*sets, "train.epochs=3", "train.batch_size=4"] for arg in ("--set", s)]
    assert main(["preprocess", DEMO_YAML, *args]) == 0
    return out, args


@pytest.mark.parametrize(("verb", "where"), [("cv", r"fold \d, epoch \d"), ("train", r"epoch \d")])
def test_a_diverging_run_exits_2_with_one_error_line(
    verb: str, where: str, preprocessed: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, args = preprocessed
    capsys.readouterr()
    assert main([verb, DEMO_YAML, *args, "--set", "train.lr=1e6"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and "RayTaskError" not in err, err
    expected = rf"error: training diverged: {where}: the .*loss.* is {BLOWN} \(lower train.lr, now 1e\+06\)$"
    assert re.match(expected, lines[0]), lines[0]
    assert not (out / "model").exists()  # no model folder, no checkpoint from a diverged network
    assert not list((out / "cv").glob("fold_*/model*.safetensors"))
