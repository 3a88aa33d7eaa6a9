"""End to end through the CLI, as a user runs it: `seqfer run configs/demo.yaml` from nothing to a
cross-validated model and its report, then `seqfer train` and `seqfer predict` on the result.

A small demo set (6 subjects, short sequences, the packaged fallback face) and a small model keep it to about
a minute on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent

SMALL = [
    "data.demo.subjects=6",
    "data.folds=3",
    "train.epochs=3",
    "train.batch_size=8",
    "model.appearance.channels=[8, 16]",
    "model.appearance.skip_dim=8",
    "model.geometry.hidden=16",
    "model.input.size=32",
]


@pytest.mark.slow
def test_run_train_predict_from_nothing(tmp_path: Path, ray_session, capsys: pytest.CaptureFixture[str]) -> None:
    sets = [f"data.root={tmp_path / 'demo'}", f"output_dir={tmp_path / 'run'}", *SMALL]
    args = [arg for s in sets for arg in ("--set", s)]

    assert main(["run", str(REPO / "configs" / "demo.yaml"), *args]) == 0
    cv = tmp_path / "run" / "cv"
    summary = json.loads((cv / "summary.json").read_text())
    assert len(summary["folds"]) == 3 and 0.0 <= summary["accuracy_mean"] <= 1.0
    manifest = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    assert (tmp_path / "demo" / "cohn-kanade-images").is_dir()
    assert len(pd.read_csv(cv / "predictions.csv")) + len(pd.read_csv(cv / "excluded.csv")) == int(
        manifest["labelled"].sum()
    )

    # Re-running the whole pipeline redoes nothing: demo data, preprocessing and folds are all reused.
    capsys.readouterr()
    assert main(["run", str(REPO / "configs" / "demo.yaml"), *args]) == 0
    err = capsys.readouterr().err
    assert "done 0," in err and "already finished" in err

    assert main(["train", str(REPO / "configs" / "demo.yaml"), *args]) == 0
    model = tmp_path / "run" / "model"
    assert (model / "model.safetensors").is_file() and (model / "README.md").is_file()

    frames = sorted(p for p in (tmp_path / "demo" / "cohn-kanade-images").glob("S*/*") if p.is_dir())[0]
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(frames), str(tmp_path / "missing.mp4"), "-o", str(out)]) == 1
    rows = pd.read_csv(out).set_index("input")
    ok = rows.loc[str(frames)]
    assert ok["status"] == "ok" and ok["label"] in summary["classes"]
    assert rows.loc[str(tmp_path / "missing.mp4"), "status"] == "unreadable"
