"""A class-folder dataset of small face crops through the CLI, as a CK+48 user runs it: `seqfer run
configs/ck48.yaml` (manifest, preprocess, CV), then `seqfer train` and `seqfer predict` on frame folders.

The tiny generated set: 6 subjects x 2 classes x 3 frames of 48x48 grey crops of the packaged face (brightness
per subject, the surprise class with a stretched lower face), named as CK+48 names them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent

SMALL = [
    "data.classes=[happy, surprise]",
    "data.folds=3",
    "train.epochs=2",
    "train.batch_size=4",
    "model.geometry.hidden=16",
    "ray.workers=1",
]


def write_set(root: Path, crop: np.ndarray) -> None:
    for s in range(1, 7):
        for cls, seq in (("happy", 1), ("surprise", 2)):
            img = crop.astype(np.float32) * (0.8 + 0.05 * s)
            if cls == "surprise":  # stretch the lower half a little: a different expression, same face
                lower = cv2.resize(img[24:], (48, 28))[:24]
                img = np.vstack([img[:24], lower])
            for f in range(3):
                name = f"S{s:03d}_{seq:03d}_{f + 10:08d}.png"
                path = root / cls / name
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.clip(img + f, 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_ck48_run_train_predict(tmp_path: Path, tight_crop, ray_session) -> None:
    crop, _ = tight_crop
    root = tmp_path / "CK+48"
    write_set(root, crop)
    sets = [f"data.root={root}", f"output_dir={tmp_path / 'run'}", *SMALL]
    args = [arg for s in sets for arg in ("--set", s)]
    config = str(REPO / "configs" / "ck48.yaml")

    assert main(["run", config, *args]) == 0
    cv = tmp_path / "run" / "cv"
    predictions = pd.read_csv(cv / "predictions.csv")
    assert len(predictions) == 12 and predictions["sequence_id"].is_unique
    assert {"sequence_id", "subject", "fold", "label", "pred", "p_happy", "p_surprise"} <= set(predictions)
    assert predictions.groupby("subject")["fold"].nunique().max() == 1
    probs = predictions[[c for c in predictions if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert len(json.loads((cv / "summary.json").read_text())["folds"]) == 3

    assert main(["train", config, *args]) == 0
    model = tmp_path / "run" / "model"
    folders = []
    for name in ("new_a", "new_b"):  # new sequences: a folder of one sequence's 48x48 frames each
        folder = tmp_path / "new" / name
        folder.mkdir(parents=True)
        for f in range(3):
            cv2.imwrite(str(folder / f"{f:03d}.png"), crop)
        folders.append(str(folder))
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), *folders, "-o", str(out)]) == 0
    rows = pd.read_csv(out)
    assert list(rows["status"]) == ["ok", "ok"]
    assert set(rows["label"]) <= {"happy", "surprise"}
    np.testing.assert_allclose(rows[["p_happy", "p_surprise"]].sum(axis=1), 1.0, atol=1e-6)
