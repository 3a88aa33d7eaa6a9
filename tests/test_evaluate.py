"""`seqfer evaluate`: metrics that agree with the predictions, alias class folders, a class the model lacks excluded
and counted, a faceless image reported not scored, a killed run resumed, and user mistakes as one `error:` line.

The model is small, seeded and untrained (scores do not need a good model); the data is a class-folder set of
one-frame sequences of scikit-image's astronaut (tests/test_predict.py's face) and one blank image.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from test_predict import _cfg, _face, _model

from data_manifests.errors import ManifestError
from pipeline.cli import main
from pipeline.evaluate.data import match_classes, select_split
from pipeline.evaluate.metrics import score
from pipeline.evaluate.run import run_evaluate
from pipeline.model_folder.folder import write_model_folder

MODEL_CLASSES = ["anger", "fear", "happy", "sadness", "surprise"]  # fear: a class the data lacks
# class folder (aliases included) -> images (face shift, or None for a blank image without a face)
DATA = {
    "angry": [0],
    "Happiness": [2, 4],
    "sad": [6],
    "surprise": [8, None],
    "neutral": [10],  # the model has no neutral: excluded and counted
}
CANONICAL = {"angry": "anger", "Happiness": "happy", "sad": "sadness", "surprise": "surprise"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = _cfg()
    model = _model(cfg, 0, n_classes=len(MODEL_CLASSES))
    return write_model_folder(tmp_path_factory.mktemp("m") / "model", model, cfg, MODEL_CLASSES, {"trained_at": "t"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/<class>/S<nnn>_001_00000001.png: one one-frame sequence (and subject) per image."""
    root = tmp_path_factory.mktemp("data")
    subject = 0
    for folder, shifts in DATA.items():
        (root / folder).mkdir()
        for shift in shifts:
            subject += 1
            image = np.full((256, 256, 3), 120, np.uint8) if shift is None else _face(shift)
            cv2.imwrite(str(root / folder / f"S{subject:03d}_001_00000001.png"), image)
    return root


@pytest.fixture(scope="module")
def evaluated(model_dir: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(OUT, metrics) of one evaluation, predicted in this process (few inputs: no Ray start-up)."""
    out = tmp_path_factory.mktemp("eval") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipeline.predict.run.RAY_MIN_INPUTS", 10**6)
        metrics = run_evaluate(model_dir, dataset, "imagefolder", out)
    return out, metrics


def _predictions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])


def test_metrics_agree_with_the_predictions(evaluated: tuple[Path, dict], model_dir: Path) -> None:
    out, metrics = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    table = _predictions(out)
    assert list(table.columns[:7]) == ["sequence_id", "subject", "label", "pred", "pred_shared", "status", "reason"]
    assert list(table.columns[7:]) == [f"p_{c}" for c in MODEL_CLASSES]
    ok = table[table["status"] == "ok"]
    assert metrics["n_scored"] == len(ok) == 5
    assert metrics["accuracy"] == pytest.approx((ok["pred"] == ok["label"]).mean())
    assert metrics["accuracy_shared"] == pytest.approx((ok["pred_shared"] == ok["label"]).mean())
    recalls = [(ok[ok["label"] == c]["pred"] == c).mean() for c in metrics["classes"]]
    assert metrics["mean_class_accuracy"] == pytest.approx(np.mean(recalls))
    present = sorted(set(ok["label"]))
    assert metrics["macro_f1"] == pytest.approx(f1_score(ok["label"], ok["pred"], labels=present, average="macro"))
    for c in metrics["classes"]:
        predicted = ok[ok["pred"] == c]
        precision = (predicted["label"] == c).mean() if len(predicted) else 0.0
        assert metrics["per_class"][c]["precision"] == pytest.approx(precision)
    # over every scored-class row, the faceless one counted wrong
    assert metrics["accuracy_all"] == pytest.approx((ok["pred"] == ok["label"]).sum() / len(table))
    assert metrics["classes"] == ["anger", "happy", "sadness", "surprise"]  # the scored ones, in the model's order
    assert "fear" not in set(ok["pred_shared"])
    assert metrics["model"]["classes"] == MODEL_CLASSES and len(metrics["model"]["fingerprint"]) == 16
    assert metrics["data"]["format"] == "imagefolder" and metrics["data"]["split"] is None
    confusion = pd.read_csv(out / "confusion.csv", index_col="true")
    assert list(confusion.index) == metrics["classes"] and list(confusion.columns) == MODEL_CLASSES
    assert confusion.to_numpy().sum() == metrics["n_scored"]
    assert (out / "confusion.png").stat().st_size > 0


def test_a_class_the_model_lacks_is_excluded_and_counted(evaluated: tuple[Path, dict]) -> None:
    out, metrics = evaluated
    assert metrics["excluded_classes"] == {"neutral": 1} and metrics["n_excluded"] == 1
    assert "neutral" not in set(_predictions(out)["label"])
    assert metrics["n_sequences"] == sum(len(v) for v in DATA.values())


def test_alias_class_folders_map_to_the_model_classes(evaluated: tuple[Path, dict], dataset: Path) -> None:
    out, _metrics = evaluated
    table = _predictions(out).set_index("sequence_id")
    for folder, canonical in CANONICAL.items():
        for image in (dataset / folder).iterdir():
            assert table.loc[image.stem.rsplit("_", 1)[0], "label"] == canonical


def test_a_faceless_image_is_reported_not_scored(evaluated: tuple[Path, dict]) -> None:
    out, metrics = evaluated
    failed = _predictions(out).query("status != 'ok'")
    assert len(failed) == 1 and failed["status"].iloc[0] == "no_face" and failed["reason"].iloc[0]
    assert pd.isna(failed["pred"].iloc[0]) and failed[[f"p_{c}" for c in MODEL_CLASSES]].isna().all(axis=None)
    assert metrics["n_failed"] == 1 and metrics["failed"] == {"no_face": 1}
    assert metrics["accuracy_all"] == pytest.approx(metrics["accuracy"] * 5 / 6)


def test_scores_of_a_known_table() -> None:
    """Hand-counted: 6 rows of 3 scored classes (the model also knows ``fear``), one failed row."""
    classes, scored = ["anger", "fear", "happy", "sadness"], ["anger", "happy", "sadness"]
    p = {
        "anger": [0.7, 0.2, 0.1, 0.0],  # right
        "fear": [0.3, 0.6, 0.1, 0.0],  # argmax fear; anger among the shared classes
        "happy": [0.1, 0.1, 0.8, 0.0],  # happy: right
    }
    rows = [("anger", p["anger"]), ("anger", p["fear"]), ("happy", p["happy"]), ("happy", p["anger"])]
    rows += [("sadness", p["happy"]), ("sadness", None)]  # wrong, and failed
    table = pd.DataFrame(
        [
            {
                "label": label,
                "status": "ok" if probs is not None else "no_face",
                **{f"p_{c}": (np.nan if probs is None else v) for c, v in zip(classes, probs or [0] * 4, strict=True)},
            }
            for label, probs in rows
        ]
    )
    s = score(table, classes, scored)
    assert (s.n_scored, s.n_failed) == (5, 1)
    assert s.accuracy == pytest.approx(2 / 5) and s.accuracy_all == pytest.approx(2 / 6)
    assert s.accuracy_shared == pytest.approx(3 / 5) and s.accuracy_shared_all == pytest.approx(3 / 6)
    # argmax over every class: anger P 1/2 R 1/2, happy P 1/2 R 1/2, sadness P 0 R 0 (fear predicted once)
    assert s.per_class["anger"] == {"n": 2, "accuracy": 0.5, "precision": 0.5, "f1": 0.5}
    assert s.per_class["sadness"]["f1"] == 0.0
    assert s.macro_f1 == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # restricted: anger P 2/3 R 1 (F1 0.8), happy P 1/2 R 1/2, sadness 0
    assert s.macro_f1_shared == pytest.approx((0.8 + 0.5 + 0.0) / 3)


def test_a_rerun_resumes_through_the_cli(
    evaluated: tuple[Path, dict], model_dir: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, metrics = evaluated
    capsys.readouterr()
    assert main(["evaluate", str(model_dir), str(dataset), "--format", "imagefolder", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "already done" in err and "evaluate: accuracy" in err and "excluded, a class the model lacks" in err
    again = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in metrics.items() if k != "seconds"}


def test_split_scores_only_that_split_and_leaves_the_other_folders_unread(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """FER2013's folder export with ``split='val'``: only ``validation/`` is listed and scored; ``train/`` and
    ``test/`` are reported as not read (evaluating PublicTest need not walk the 28,709 training files)."""
    root = tmp_path / "fer"
    for folder, prefix, shifts in (
        ("train", "Training", [0, 2]),
        ("validation", "PublicTest", [4]),
        ("test", "PrivateTest", [6]),
    ):
        for cls in ("happy", "sad"):
            (root / folder / cls).mkdir(parents=True)
            for i, shift in enumerate(shifts):
                cv2.imwrite(str(root / folder / cls / f"{prefix}_{cls}{i}.png"), _face(shift))
    with pytest.MonkeyPatch.context() as mp, caplog.at_level("INFO"):
        mp.setattr("pipeline.predict.run.RAY_MIN_INPUTS", 10**6)
        metrics = run_evaluate(model_dir, root, "fer2013", tmp_path / "out", split="val")
    assert metrics["n_sequences"] == 2 and metrics["data"]["split"] == "val"
    assert sorted(_predictions(tmp_path / "out")["sequence_id"]) == ["PublicTest_happy0", "PublicTest_sad0"]
    assert "split train not read" in caplog.text and "split test not read" in caplog.text


def test_split_on_a_dataset_without_one_is_one_error(
    model_dir: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        ["evaluate", str(model_dir), str(dataset), "--format", "imagefolder", "--split", "test", "-o", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("error: ") == 1 and "no split" in err, err
    assert not out.exists()


def test_a_foreign_output_folder_is_refused(
    model_dir: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert main(["evaluate", str(model_dir), str(dataset), "--format", "imagefolder", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not written by seqfer" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_split_keeps_its_rows_and_names_the_splits_there() -> None:
    df = pd.DataFrame({"sequence_id": ["a", "b", "c"], "split": ["train", "test", "test"]})
    assert list(select_split(df, "test", "here")["sequence_id"]) == ["b", "c"]
    assert select_split(df, None, "here") is df
    with pytest.raises(ManifestError, match="its splits: test, train"):
        select_split(df, "val", "here")


def test_unlabelled_sequences_are_counted_and_nothing_to_score_is_an_error() -> None:
    df = pd.DataFrame(
        {
            "sequence_id": ["a", "b", "c", "d"],
            "subject": ["1", "2", "3", "4"],
            "label": ["happy", None, "neutral", "sadness"],
            "labelled": [True, False, True, True],
            "label_note": [None, "no emotion file", None, None],
        }
    )
    data = match_classes(df, ["Happy", "sadness"], "here")  # a model class spelled otherwise still matches
    assert list(data.rows["label"]) == ["Happy", "sadness"] and data.scored_classes == ["Happy", "sadness"]
    assert data.excluded == {"neutral": 1} and data.unlabelled == {"no emotion file": 1} and data.n_sequences == 4
    with pytest.raises(ManifestError, match="nothing to score"):
        match_classes(df, ["anger", "fear"], "here")
