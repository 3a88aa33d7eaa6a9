"""`seqfer compare`: MAC counting, prepared-data round trip, cells on shared folds, resume, table and picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

import pipeline.compare.run as compare
from pipeline.cli import main
from pipeline.compare.cost import count_macs, count_parameters
from pipeline.compare.report import TABLE_COLUMNS
from pipeline.compare.run import cell_config, parse_list, run_compare
from pipeline.config import load_config
from pipeline.data.labelled import LabelledData, data_key, load_labelled_npz, save_labelled_data
from pipeline.errors import ConfigError
from stages.learning.models import ModelConfig, build_model
from stages.preprocess.align import AlignConfig, crop_template

S = 16
CLASSES = ["anger", "happy", "surprise"]


def synthetic_data(n: int = 48, with_targets: bool = True) -> LabelledData:
    """8 subjects in 2 folds; class c = a bright band in rows 4c..4c+4 (pixel values k / 255, like real crops)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    subjects = np.array([f"S{i % 8:03d}" for i in range(n)])
    app = rng.integers(0, 100, size=(n, 2, S, S)).astype(np.float32)
    for i, c in enumerate(labels):
        app[i, :, 4 * c : 4 * c + 4] += 150
    landmarks = crop_template(AlignConfig(size=S)).astype(np.float32)[None] + rng.uniform(-1, 1, (n, 1, 2))
    return LabelledData(
        sequence_ids=np.array([f"seq{i}" for i in range(n)]),
        subjects=subjects,
        folds=np.array([int(s[-1]) % 2 for s in subjects], dtype=np.int64),
        labels=labels.astype(np.int64),
        appearance=app / np.float32(255.0),
        trajectory=rng.normal(scale=0.1, size=(n, 4, 68, 2)).astype(np.float32),
        classes=CLASSES,
        excluded=pd.DataFrame(columns=["sequence_id", "subject", "fold", "label", "status", "reason"]),
        landmarks=landmarks.astype(np.float32),
        targets={"face_descriptor": rng.normal(size=(n, 128)).astype(np.float32)} if with_targets else {},
    )


def write_config(tmp_path: Path) -> Path:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {"folds": 2},
        "model": {"input": {"appearance": "last_k", "k": 2, "size": S}, "geometry": {"hidden": 8}},
        "train": {"epochs": 2, "batch_size": 8, "patience": 2},
        "cv": {"device": "cpu"},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Gram(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x.transpose(-1, -2)


class _Resample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(torch.eye(2, 3).unsqueeze(0), [1, 2, 3, 3], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", align_corners=False)


def test_count_macs_and_parameters() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    # conv: 2 x 4 x 4 outputs x 9 weights; linear: 3 outputs x 32 inputs
    assert count_macs(net, torch.zeros(1, 1, 4, 4)) == 2 * 16 * 9 + 3 * 32
    assert count_parameters(net) == 2 * 9 + 2 + 32 * 3 + 3
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    assert count_macs(grouped, torch.zeros(1, 4, 5, 5)) == 4 * 25 * 9
    # what layer hooks cannot see: a bare matrix product, and resampling (pcnn's region crops)
    assert count_macs(_Gram(), torch.zeros(2, 4, 3)) == 2 * 4 * 4 * 3
    # affine_grid: 3 x 3 grid x (x, y) x 3 weights; grid_sample: 2 channels x 3 x 3 outputs x 4 bilinear taps
    assert count_macs(_Resample(), torch.zeros(1, 2, 5, 5)) == 9 * 2 * 3 + 2 * 9 * 4
    cfg = ModelConfig.model_validate({"appearance": {"channels": [4, 8], "skip_dim": 4}, "input": {"size": S}})
    model = build_model(cfg, 3, 2, 4)
    both = count_macs(model, torch.zeros(1, 2, S, S), torch.zeros(1, 4, 68, 2))
    app_only = count_macs(model.appearance, torch.zeros(1, 2, S, S))
    assert both > app_only > 0
    assert model.training  # mode restored


def test_prepared_data_round_trip_and_key_check(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    data = synthetic_data()
    key = data_key(cfg)
    path = save_labelled_data(tmp_path / "d.npz", data, key)
    back = load_labelled_npz(path, key)
    np.testing.assert_array_equal(back.appearance, data.appearance)  # exact through uint8
    np.testing.assert_array_equal(back.targets["face_descriptor"], data.targets["face_descriptor"])
    np.testing.assert_array_equal(back.landmarks, data.landmarks)
    assert back.classes == CLASSES and list(back.subjects) == list(data.subjects)
    with pytest.raises(ConfigError, match="another config"):
        load_labelled_npz(path, data_key(load_config(write_config(tmp_path), ["model.input.size=32"])))
    odd = synthetic_data(with_targets=False)
    odd.appearance = odd.appearance + np.float32(1e-3)  # not multiples of 1/255: stored as float
    np.testing.assert_array_equal(
        load_labelled_npz(save_labelled_data(tmp_path / "f.npz", odd, "k")).appearance, odd.appearance
    )


def test_parse_list_and_cell_config(tmp_path: Path) -> None:
    assert parse_list("dtan, skipnet,dtan", (), ["skipnet", "dtan"], "models") == ["dtan", "skipnet"]
    assert parse_list(None, ("a",), ["a"], "x") == ["a"]
    with pytest.raises(ConfigError, match="unknown models nope"):
        parse_list("skipnet,nope", (), ["skipnet"], "models")
    cfg = load_config(write_config(tmp_path), ["model.appearance.options={}"])
    cell = cell_config(cfg, "dtan", "appearance")
    assert cell.model.appearance.name == "dtan" and cell.model.streams == "appearance"
    assert Path(cell.output_dir) == Path(cfg.output_dir) / "compare" / "dtan_appearance"
    assert cell.cache_dir == cfg.cache_dir and cell.model.input == cfg.model.input
    assert cfg.model.appearance.name == "skipnet"  # the base config is untouched


def test_compare_runs_every_cell_once_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path))
    models, streams = ["pcnn", "fn2en"], ["appearance", "fused"]
    npz = save_labelled_data(tmp_path / "prepared.npz", synthetic_data(), data_key(cfg))
    table = run_compare(cfg, ",".join(models), streams, use_ray=False, data_file=npz)
    out = Path(cfg.output_dir) / "compare"
    assert list(table.columns) == TABLE_COLUMNS
    assert [(r.model, r.streams) for r in table.itertuples()] == [(m, s) for m in models for s in streams]
    assert (table["n_folds"] == 2).all() and (table["n_sequences"] == 48).all()
    assert (table["parameters"] > 0).all() and (table["macs_per_sequence"] > 0).all()
    assert (table["predict_ms_per_sequence"] > 0).all() and table["accuracy_mean"].between(0, 1).all()
    fused = table.set_index(["model", "streams"])["macs_per_sequence"]
    assert all(fused[(m, "fused")] > fused[(m, "appearance")] for m in models)  # the geometry stream costs MACs
    assert (out / "comparison.png").stat().st_size > 10_000
    md = (out / "comparison.md").read_text()
    assert "| pcnn | fused |" in md and "wall time" in md
    pd.testing.assert_frame_equal(pd.read_csv(out / "comparison.csv"), table, check_dtype=False)
    # same folds in every cell
    splits = {c: pd.read_csv(out / c / "cv" / "splits.csv") for c in ("fn2en_appearance", "pcnn_fused")}
    pd.testing.assert_frame_equal(*splits.values())
    assert (out / "fn2en_fused" / "cv" / "fold_0" / "pretrain_history.csv").is_file()
    assert json.loads((out / "pcnn_fused" / "cell.json").read_text())["row"]["model"] == "pcnn"

    # finished cells are not re-run: a second call must not train anything
    def boom(*args, **kwargs):
        raise AssertionError("a finished cell was re-run")

    monkeypatch.setattr(compare, "run_cv", boom)
    again = run_compare(cfg, models, streams, use_ray=False, data_file=npz)
    pd.testing.assert_frame_equal(again.drop(columns="device"), table.drop(columns="device"))


def test_cli_compare_prepared_data_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_config(tmp_path)
    cfg = load_config(path)
    npz = save_labelled_data(tmp_path / "p.npz", synthetic_data(with_targets=False), data_key(cfg))
    args = ["compare", str(path), "--streams", "appearance", "--data", str(npz), "--no-ray"]
    assert main([*args, "--models", "dtan"]) == 0
    assert (Path(cfg.output_dir) / "compare" / "dtan_appearance" / "cv" / "summary.json").is_file()
    assert main([*args, "--models", "nonet"]) == 2
    capsys.readouterr()
    assert main([*args, "--models", "fn2en"]) == 2  # the prepared data lacks fn2en's face descriptors
    assert "lacks the training targets face_descriptor" in capsys.readouterr().err
