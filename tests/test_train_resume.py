"""`seqfer train` killed with SIGKILL resumes from its members' training states, to the same weights.

The tiny generated CK+-layout demo set, a 2-network ensemble of the tiny model for 4 epochs: a subprocess is
killed (SIGKILL, no clean-up) after member 1's second epoch; the rerun trains only member 1's epochs 3-4, and the
resumed model folder's weights equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_datasets import TINY_MODEL

import stages.learning.training.member as member
from pipeline.config import Config, load_config
from pipeline.data.labelled import LabelledData, load_labelled_data
from pipeline.model_folder.format import member_files
from pipeline.train.run import run_train, state_dir
from stages.learning.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 4
SETTINGS = [
    "preprocess.align.size=48",
    *TINY_MODEL,
    f"train.epochs={EPOCHS}",
    "train.patience=10",
    "train.batch_size=4",
    "train.ensemble=2",
    "data.folds=2",
    "ray.workers=2",
]

KILLED_RUN = """
import os, pickle, signal, sys
sys.path.insert(0, {repo!r})
import pipeline.train.run as train_run
import stages.learning.training.member as member

train_run.TRAIN_STATE_EVERY_S = 0.0  # a state after every epoch: the kill lands between two saved epochs
cfg, data, out = pickle.loads(open({args!r}, "rb").read())
reported = []
fit = member.fit


def killing_fit(*args, on_epoch=None, **kwargs):
    def hook(row):
        on_epoch(row)
        reported.append(row["epoch"])
        if len(reported) == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

    return fit(*args, on_epoch=hook, **kwargs)


member.fit = killing_fit
train_run.run_train(cfg, out_dir=out, data=data)
"""


@pytest.fixture(scope="module")
def prepared(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Config, LabelledData]:
    out = tmp_path_factory.mktemp("train_resume")
    cfg = load_config(None, ["data.format=ckplus", f"data.root={tiny_demo}", f"output_dir={out}", *SETTINGS])
    return cfg, load_labelled_data(cfg)


def test_a_killed_train_resumes_to_the_uninterrupted_weights(prepared, tmp_path: Path, monkeypatch) -> None:
    cfg, data = prepared
    whole = run_train(cfg, out_dir=tmp_path / "whole", data=data)

    out = tmp_path / "model"
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((cfg, data, out)))
    script = KILLED_RUN.format(repo=str(REPO), args=str(args), kill_at=EPOCHS + 2)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not out.exists()  # no model folder until training is finished
    assert {p.name for p in state_dir(out).glob("train_state*.pt")} == {"train_state.pt", "train_state.1.pt"}

    epochs: list[list[int]] = []
    fit = member.fit

    def recording_fit(*args, on_epoch=None, **kwargs):
        epochs.append([])

        def hook(row: dict) -> None:
            epochs[-1].append(row["epoch"])
            on_epoch(row)

        return fit(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(member, "fit", recording_fit)
    run_train(cfg, out_dir=out, data=data)
    assert epochs == [[], [3, 4]]  # member 0 had finished, member 1 continues after its second epoch
    assert not state_dir(out).exists()  # the model folder is written: its training states are removed

    resumed_files, whole_files = member_files(out), member_files(whole)
    assert (
        [p.name for p in resumed_files] == [p.name for p in whole_files] == ["model.safetensors", "model.1.safetensors"]
    )
    for resumed_file, whole_file in zip(resumed_files, whole_files, strict=True):
        resumed, expected = load_checkpoint(resumed_file)[0].state_dict(), load_checkpoint(whole_file)[0].state_dict()
        assert resumed.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(tensor, resumed[name]), f"{resumed_file.name}: {name}"


def test_train_refuses_a_state_folder_it_did_not_write(prepared, tmp_path: Path) -> None:
    from stages.errors import StageError

    cfg, data = prepared
    out = tmp_path / "model"
    state_dir(out).mkdir()
    (state_dir(out) / "notes.txt").write_text("mine")
    with pytest.raises(StageError, match="not written by seqfer"):
        run_train(cfg, out_dir=out, data=data)
    assert (state_dir(out) / "notes.txt").read_text() == "mine" and not out.exists()
