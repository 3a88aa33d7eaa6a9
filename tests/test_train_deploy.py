"""`seqfer train`: a deployable model folder from all labelled subjects, its model card, and the guarantee that
prediction feeds the model exactly what training fed it (same preprocessing code, same tensors).

Uses the tiny generated CK+-layout demo set (``tiny_demo``) and the shared Ray session; the model is tiny and
trains for 2 epochs (what it learns does not matter here).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_datasets import TINY_MODEL

from data_manifests.schema import CLASS_SETS, read_manifest
from pipeline.config import Config, load_config, to_yaml
from pipeline.data.labelled import load_labelled_data
from pipeline.model_folder.folder import cv_accuracy
from pipeline.model_folder.load import load_model_bundle
from pipeline.predict.inputs import input_from_path
from pipeline.predict.predictor import Predictor
from pipeline.predict.run import run_predict
from pipeline.preprocess.to_stages import source_from_row
from pipeline.train.run import deployment_split, run_train
from stages.learning.training.checkpoint import load_checkpoint
from stages.learning.training.predict import predict_proba

TINY = ["preprocess.align.size=48", *TINY_MODEL, "train.epochs=2", "train.batch_size=4", "ray.workers=2"]


def _cli(args: list[str]) -> int:
    import typer

    from pipeline.cli import app

    return typer.main.get_command(app).main(args=args, prog_name="seqfer", standalone_mode=False) or 0


@pytest.fixture(scope="module")
def trained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Config, Path]:
    """`seqfer train` on the tiny demo, after a (stand-in) CV run with the same settings."""
    out = tmp_path_factory.mktemp("train_run")
    cfg = load_config(
        None, ["data.format=ckplus", f"data.root={tiny_demo}", "data.folds=2", f"output_dir={out}", *TINY]
    )
    config_file = out / "tiny.yaml"
    config_file.write_text(to_yaml(cfg))
    (out / "cv").mkdir()
    (out / "cv" / "config.yaml").write_text(to_yaml(cfg))
    (out / "cv" / "summary.json").write_text(
        json.dumps(
            {
                "accuracy_mean": 0.5,
                "accuracy_std": 0.1,
                "mean_class_accuracy": 0.45,
                "n_sequences": 7,
                "folds": [{"fold": 0}, {"fold": 1}],
            }
        )
    )
    assert _cli(["train", str(config_file)]) == 0
    return cfg, out / "model"


def test_model_folder_holds_weights_config_classes_preprocessing_and_card(trained: tuple[Config, Path]) -> None:
    cfg, folder = trained
    assert {"model.safetensors", "model.json", "config.yaml", "classes.txt", "history.csv", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    info = json.loads((folder / "model.json").read_text())
    classes = (folder / "classes.txt").read_text().split()
    assert info["format"] == "seqfer-model" and info["classes"] == classes == CLASS_SETS["ckplus7"]
    assert info["preprocessing"]["sequence"]["align"]["size"] == 48
    assert info["preprocessing"]["model_input"]["size"] == 32
    assert info["split"]["n_train"] + info["split"]["n_val"] == info["data"]["n_sequences"]
    assert info["data"]["max_frames"] > 1  # trained on sequences: prediction sees a video as a sequence
    assert len(pd.read_csv(folder / "history.csv")) == info["epochs_run"]
    card = (folder / "README.md").read_text()
    assert "2-fold subject-independent CV: 50.0% +- 10.0%" in card and "same settings as this model" in card
    assert info["trained_at"][:4] in card and "torch:" in card and ", ".join(classes) in card
    bundle = load_model_bundle(folder)
    assert bundle.kind == "model" and bundle.classes == classes and bundle.sequence.align.size == 48


def test_cv_accuracy_is_unknown_without_a_cv_run(tmp_path: Path) -> None:
    assert cv_accuracy(tmp_path / "cv", load_config(None)) is None


def test_deployment_split_uses_every_subject_once(trained: tuple[Config, Path]) -> None:
    cfg, _ = trained
    data = load_labelled_data(cfg, preprocess=False)
    train, val = deployment_split(data, val_fraction=0.3, seed=0)
    assert len(train) + len(val) == len(data.labels) and not set(train) & set(val)
    assert not set(data.subjects[train]) & set(data.subjects[val])  # whole subjects validate
    again_train, again_val = deployment_split(data, val_fraction=0.3, seed=0)
    np.testing.assert_array_equal(val, again_val)


def test_prediction_feeds_the_model_what_training_fed_it(trained: tuple[Config, Path]) -> None:
    """Each training sequence, predicted from its manifest row and from its frame folder (no cache: computed
    afresh), gives bit-identical model inputs to the training arrays."""
    cfg, folder = trained
    data = load_labelled_data(cfg, preprocess=False)
    predictor = Predictor.load(folder)  # no cache dir: nothing is read from the training cache
    manifest = read_manifest(cfg.manifest_path)[0].set_index("sequence_id", drop=False)
    checked_folders = 0
    for i, seq in enumerate(data.sequence_ids):
        source = source_from_row(manifest.loc[seq])
        appearance, trajectory = predictor.model_inputs(source)
        np.testing.assert_array_equal(appearance[0], data.appearance[i], err_msg=seq)
        np.testing.assert_array_equal(trajectory[0], data.trajectory[i], err_msg=seq)
        frames_dir = Path(source.frame_paths[0]).parent
        if source.peak_index in (None, len(source.frame_paths) - 1) and len(list(frames_dir.glob("*.png"))) == len(
            source.frame_paths
        ):
            appearance, trajectory = predictor.model_inputs(input_from_path(frames_dir))
            np.testing.assert_array_equal(appearance[0], data.appearance[i], err_msg=f"{seq} as a folder")
            np.testing.assert_array_equal(trajectory[0], data.trajectory[i], err_msg=f"{seq} as a folder")
            checked_folders += 1
    assert checked_folders > 0


def test_predicting_the_manifest_matches_the_trained_model(trained: tuple[Config, Path], tmp_path: Path) -> None:
    cfg, folder = trained
    data = load_labelled_data(cfg, preprocess=False)
    out = tmp_path / "pred.csv"
    run_predict(folder, [str(cfg.manifest_path)], output=out)  # Ray: more inputs than RAY_MIN_INPUTS
    rows = pd.read_csv(out).set_index("input")
    manifest = pd.read_parquet(cfg.manifest_path)
    assert list(rows.index) == list(manifest["sequence_id"])  # every row, labelled or not, in order
    bundle = load_model_bundle(folder)
    expected = predict_proba(bundle.models[0], (data.appearance, data.trajectory))
    for seq, probs, label in zip(data.sequence_ids, expected, data.labels, strict=True):
        row = rows.loc[seq]
        assert row["status"] == "ok" and row["true_label"] == data.classes[label]
        got = np.array([row[f"p_{c}"] for c in bundle.classes])
        np.testing.assert_allclose(got, probs, rtol=0, atol=1e-12)
        assert math.isclose(got.sum(), 1.0, abs_tol=1e-9)


def test_appearance_extras_are_built_as_in_training(trained: tuple[Config, Path], tmp_path: Path) -> None:
    """A network that reads extra appearance channels (pcnn: face-region masks) gets them at prediction too."""
    from pipeline.model_folder.folder import write_model_folder
    from stages.learning.models import build_model, frames_for

    cfg, _ = trained
    cfg = cfg.model_copy(deep=True)
    cfg.model.appearance.name = "pcnn"
    cfg.model.appearance.options = {"global_channels": [8], "local_channels": [4], "fusion_dim": 8}
    data = load_labelled_data(cfg, preprocess=False)  # the training path, from the cache
    n_frames = frames_for(cfg.model.input)
    assert data.appearance.shape[1] == n_frames + 5  # stacked frames + 5 region masks
    model = build_model(cfg.model, len(data.classes), data.appearance.shape[1], data.trajectory.shape[1])
    predictor = Predictor.load(write_model_folder(tmp_path / "pcnn", model, cfg, data.classes, {}))
    manifest = read_manifest(cfg.manifest_path)[0].set_index("sequence_id", drop=False)
    appearance, trajectory = predictor.model_inputs(source_from_row(manifest.loc[data.sequence_ids[0]]))
    np.testing.assert_array_equal(appearance[0], data.appearance[0])
    np.testing.assert_array_equal(trajectory[0], data.trajectory[0])
    assert predictor.predict(source_from_row(manifest.loc[data.sequence_ids[0]])).status == "ok"


def test_an_ensemble_model_folder_holds_every_member(trained: tuple[Config, Path], tmp_path: Path) -> None:
    """``train.ensemble=2``: member 0 is the single-network model of the same seed (bit-identical weights),
    member 1 the run at seed + 1 with its own validation subjects; prediction averages the two; the card,
    model.json and history.csv say so."""
    cfg, single_folder = trained
    ensemble = cfg.model_copy(deep=True)
    ensemble.train.ensemble = 2
    data = load_labelled_data(cfg, preprocess=False)
    folder = run_train(ensemble, tmp_path / "model", data)
    assert (folder / "model.1.safetensors").is_file() and not (folder / "model.2.safetensors").exists()
    info = json.loads((folder / "model.json").read_text())
    assert info["ensemble"] == 2 and [m["seed"] for m in info["members"]] == [cfg.seed, cfg.seed + 1]
    _, val_1 = deployment_split(data, cfg.train.val_fraction, cfg.seed + 1)
    assert info["members"][1]["split"]["val_subjects"] == sorted(set(data.subjects[val_1].tolist()))
    single, member_0 = (
        load_checkpoint(single_folder / "model.safetensors")[0],
        load_checkpoint(folder / "model.safetensors")[0],
    )
    for (name, a), b in zip(single.state_dict().items(), member_0.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    history = pd.read_csv(folder / "history.csv")
    assert sorted(history["member"].unique()) == [0, 1]
    assert "Ensemble of 2 networks" in (folder / "README.md").read_text()

    predictor = Predictor.load(folder)
    assert len(predictor.bundle.models) == 2 and "ensemble of 2 networks" in predictor.bundle.describe()
    inputs = (data.appearance[:3], data.trajectory[:3])
    members = [predict_proba(m, inputs) for m in predictor.bundle.models]
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(predictor.probabilities(*inputs), (members[0] + members[1]) / 2, atol=1e-12)
