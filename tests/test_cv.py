"""Cross-validation runner: subject independence, the run folder's contents, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_datasets import TINY_MODEL
from sklearn.metrics import f1_score

from pipeline.config import Config, load_config
from pipeline.cv.run import cv_dir, run_cv
from pipeline.data.labelled import load_labelled_data, split_fold
from pipeline.model_folder.format import member_file
from pipeline.model_folder.load import load_model_bundle
from stages.errors import StageError
from stages.learning.training.checkpoint import load_checkpoint
from stages.learning.training.predict import predict_proba


@pytest.mark.parametrize("seed", range(5))
def test_split_fold_never_shares_a_subject(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_subjects = int(rng.integers(12, 40))
    subjects = rng.integers(0, n_subjects, size=200).astype(str)
    subject_fold = {s: i % 10 for i, s in enumerate(rng.permutation(np.unique(subjects)))}
    folds = np.array([subject_fold[s] for s in subjects])
    for fold in range(10):
        train, val, test = split_fold(subjects, folds, fold, 0.15, seed)
        parts = [set(subjects[i]) for i in (train, val, test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(train) + len(val) + len(test) == len(subjects)
        assert set(test) == set(np.flatnonzero(folds == fold))
        assert len(parts[1]) >= 1


def test_split_fold_is_deterministic() -> None:
    subjects = np.array([f"S{i % 17}" for i in range(100)])
    folds = np.array([int(s[1:]) % 5 for s in subjects])
    a = split_fold(subjects, folds, 2, 0.2, 7)
    b = split_fold(subjects, folds, 2, 0.2, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


TINY = ["train.epochs=2", "train.batch_size=4", *TINY_MODEL]


@pytest.fixture(scope="module")
def cv_run(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> Config:
    """CV on the tiny demo; Ray serves the preprocessing only, the folds run in this process."""
    cfg = load_config(
        None,
        [
            "data.format=ckplus",
            f"data.root={tiny_demo}",
            "data.folds=2",
            f"output_dir={tmp_path_factory.mktemp('cv')}",
            *TINY,
        ],
    )
    run_cv(cfg, load_labelled_data(cfg), use_ray=False)
    return cfg


def test_run_folder_holds_every_report(cv_run: Config) -> None:
    out = cv_dir(cv_run)
    for name in [
        "config.yaml",
        "environment.json",
        "summary.json",
        "summary.md",
        "predictions.csv",
        "confusion.csv",
        "confusion.png",
        "curves.csv",
        "curves.png",
        "splits.csv",
        "excluded.csv",
    ]:
        assert (out / name).is_file(), name
    for fold in (0, 1):
        for name in ["model.safetensors", "history.csv", "result.json"]:
            assert (out / f"fold_{fold}" / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert {"accuracy_mean", "accuracy_std", "mean_class_accuracy", "macro_f1"} <= summary.keys()
    predictions = pd.read_csv(out / "predictions.csv")
    labels = sorted(set(predictions["label"]))
    assert summary["macro_f1"] == pytest.approx(
        f1_score(predictions["label"], predictions["pred"], labels=labels, average="macro")
    )
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    assert all({"fold", "accuracy", "n_test"} <= f.keys() for f in summary["folds"])
    env = json.loads((out / "environment.json").read_text())
    assert {"seqfer", "torch", "ray", "device"} <= env.keys()
    native = "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "emulated"
    assert env["cpu"].endswith(f"cores, bfloat16 {native}")  # the CV time depends on it (BENCHMARKS.md)


def test_a_cv_run_folder_predicts_in_the_precision_its_folds_trained_in(cv_run: Config, tmp_path: Path) -> None:
    """Loaded as a model, a CV run folder reads what its networks trained in from its folds' result.json (as a
    model folder does from model.json), not from its config, where ``auto`` resolves per machine."""
    import shutil

    folder = shutil.copytree(cv_dir(cv_run), tmp_path / "cv")
    assert load_model_bundle(folder).trained_precision == "float32"
    for result in folder.glob("fold_*/result.json"):
        facts = json.loads(result.read_text())
        assert facts["members"] and all(m["precision"] == "float32" for m in facts["members"])
        facts["members"][0]["precision"] = "bfloat16"  # as if this fold had trained on a CPU with native bf16
        result.write_text(json.dumps(facts))
    assert load_model_bundle(folder).trained_precision == "bfloat16"


def test_predictions_cover_each_labelled_sequence_once(cv_run: Config) -> None:
    out = cv_dir(cv_run)
    pred = pd.read_csv(out / "predictions.csv")
    classes = json.loads((out / "summary.json").read_text())["classes"]
    assert list(pred.columns[:5]) == ["sequence_id", "subject", "fold", "label", "pred"]
    assert [c for c in pred.columns if c.startswith("p_")] == [f"p_{c}" for c in classes]
    np.testing.assert_allclose(pred[[f"p_{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-5)
    assert pred["sequence_id"].is_unique
    manifest = pd.read_parquet(cv_run.manifest_path)
    excluded = pd.read_csv(out / "excluded.csv")
    assert len(pred) + len(excluded) == int(manifest["labelled"].sum())


def test_no_test_subject_was_seen_in_training_or_validation(cv_run: Config) -> None:
    splits = pd.read_csv(cv_dir(cv_run) / "splits.csv")
    for _fold, g in splits.groupby("fold"):
        parts = {part: set(g[g["part"] == part]["subject"]) for part in ("train", "val", "test")}
        assert not parts["test"] & (parts["train"] | parts["val"])
        assert not parts["train"] & parts["val"]
    pred = pd.read_csv(cv_dir(cv_run) / "predictions.csv")
    for _, row in pred.iterrows():
        fold_split = splits[splits["fold"] == row["fold"]]
        assert row["subject"] in set(fold_split[fold_split["part"] == "test"]["subject"])


def test_finished_folds_are_not_rerun(cv_run: Config) -> None:
    result = cv_dir(cv_run) / "fold_0" / "result.json"
    stamp = result.stat().st_mtime_ns
    run_cv(cv_run, load_labelled_data(cv_run, preprocess=False), use_ray=False)
    assert result.stat().st_mtime_ns == stamp
    changed = cv_run.model_copy(deep=True)
    changed.train.lr = 0.005
    run_cv(changed, load_labelled_data(changed, preprocess=False), use_ray=False)
    assert result.stat().st_mtime_ns != stamp


def test_ray_folds_give_the_in_process_results(cv_run: Config, tmp_path: Path, ray_session) -> None:
    """One executor, two back ends: folds on Ray actors give bit-identical predictions to folds in this process,
    and a fold that raises on an actor fails the run with the fold's own error."""
    data = load_labelled_data(cv_run, preprocess=False)
    local, on_ray = cv_run.model_copy(deep=True), cv_run.model_copy(deep=True)
    local.output_dir, on_ray.output_dir = tmp_path / "local", tmp_path / "ray"
    local_summary = run_cv(local, data, use_ray=False)
    summary = run_cv(on_ray, data, use_ray=True)
    assert [f["accuracy"] for f in summary["folds"]] == [f["accuracy"] for f in local_summary["folds"]]
    pd.testing.assert_frame_equal(
        pd.read_csv(cv_dir(on_ray) / "predictions.csv"), pd.read_csv(cv_dir(local) / "predictions.csv")
    )
    broken = on_ray.model_copy(deep=True)
    broken.output_dir = tmp_path / "broken"
    broken.model.appearance.name = "no_such_network"
    with pytest.raises(StageError, match="unknown appearance model 'no_such_network'"):
        run_cv(broken, data, use_ray=True)


def test_an_ensemble_fold_averages_its_members(cv_run: Config, tmp_path: Path) -> None:
    """``train.ensemble=2``: each fold's member 0 is the single-network fold (same test probabilities), member
    1 the fold's run at seed + 1; the fold's probabilities are their mean; a CV folder loads every member;
    the same folder re-run with ensemble 1 drops the extra members."""
    data = load_labelled_data(cv_run, preprocess=False)
    single, ensemble = cv_run.model_copy(deep=True), cv_run.model_copy(deep=True)
    single.output_dir, ensemble.output_dir = tmp_path / "single", tmp_path / "ensemble"
    ensemble.train.ensemble = 2
    run_cv(single, data, use_ray=False)
    summary = run_cv(ensemble, data, use_ray=False)
    assert summary["ensemble"] == 2 and "ensemble of 2 networks" in (cv_dir(ensemble) / "summary.md").read_text()
    row_of = {sid: i for i, sid in enumerate(data.sequence_ids.tolist())}
    for fold in (0, 1):
        fold_dir = cv_dir(ensemble) / f"fold_{fold}"
        result = json.loads((fold_dir / "result.json").read_text())
        assert [m["seed"] for m in result["members"]] == [cv_run.seed, cv_run.seed + 1]
        test = data.subset(np.array([row_of[sid] for sid in result["test_ids"]]))
        p0, p1 = (predict_proba(load_checkpoint(fold_dir / member_file(k))[0], test) for k in (0, 1))
        single_result = json.loads((cv_dir(single) / f"fold_{fold}" / "result.json").read_text())
        np.testing.assert_allclose(p0, single_result["proba"], atol=1e-12)
        np.testing.assert_allclose(result["proba"], (p0 + p1) / 2, atol=1e-12)
    assert len(load_model_bundle(cv_dir(ensemble)).models) == 4
    assert set(pd.read_csv(cv_dir(ensemble) / "curves.csv")["member"]) == {0, 1}

    ensemble.train.ensemble = 1
    run_cv(ensemble, data, use_ray=False)
    assert not (cv_dir(ensemble) / "fold_0" / "model.1.safetensors").exists()
    assert len(load_model_bundle(cv_dir(ensemble)).models) == 2
