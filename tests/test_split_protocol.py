"""A dataset with its own split (FER2013's folder export): `seqfer train` trains on ``train``, chooses the epoch on
exactly the ``val`` rows and never touches ``test``; `seqfer cv` and `seqfer compare` refuse with one `error:` line
(exit 2) before any preprocessing; the split is part of the data's identity and of the prepared-data file.

The data is a tiny FER2013 folder export of one-frame faces (scikit-image's astronaut, shifted; tests/test_predict.py's
face); the model is TINY_MODEL, trained for 2 epochs (what it learns does not matter here).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_datasets import TINY_MODEL
from test_predict import _face

from data_manifests.schema import read_manifest
from pipeline.cli import main
from pipeline.config import Config, load_config, to_yaml
from pipeline.data.labelled import LabelledData, load_labelled_data, load_labelled_npz, save_labelled_data
from pipeline.runtime.run_key import data_identity
from pipeline.train.run import run_train

TINY = ["preprocess.align.size=48", *TINY_MODEL, "train.epochs=2", "train.batch_size=4", "ray.workers=2"]
CLASS_FOLDERS = ["angry", "happy", "sad"]
SPLIT_FOLDERS = {"train": ("Training", 2), "validation": ("PublicTest", 1), "test": ("PrivateTest", 1)}
"""split folder -> (file-name prefix, images per class)."""
N_IMAGES = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def fer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ROOT/<split>/<class>/<Usage>_<n>.jpg``: 6 train, 3 validation and 3 test faces, each shifted differently."""
    root = tmp_path_factory.mktemp("fer")
    n = 0
    for split, (prefix, per_class) in SPLIT_FOLDERS.items():
        for cls in CLASS_FOLDERS:
            for _ in range(per_class):
                n += 1
                path = root / split / cls / f"{prefix}_{100 + n}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), _face(2 * n))
    return root


def _cfg(root: Path, out: Path, *extra: str) -> Config:
    return load_config(
        None, ["data.format=fer2013", f"data.root={root}", "data.classes=basic7", f"output_dir={out}", *TINY, *extra]
    )


@pytest.fixture(scope="module")
def trained(fer_root: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Config, Path, list]:
    """(config, model folder, the row indices of every ``LabelledData.subset`` call made while training)."""
    cfg = _cfg(fer_root, tmp_path_factory.mktemp("split_run"))
    subsets: list[np.ndarray] = []
    original = LabelledData.subset

    def spy(self: LabelledData, idx: np.ndarray):
        subsets.append(np.asarray(idx).copy())
        return original(self, idx)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LabelledData, "subset", spy)
        folder = run_train(cfg)
    return cfg, folder, subsets


def test_labelled_data_carries_the_split_and_no_folds(trained: tuple[Config, Path, list]) -> None:
    cfg, _, _ = trained
    data = load_labelled_data(cfg, preprocess=False)
    manifest = read_manifest(cfg.manifest_path)[0].set_index("sequence_id")
    assert len(data.labels) == sum(N_IMAGES.values()) and len(data.excluded) == 0
    assert (data.folds == -1).all()
    assert data.splits is not None
    assert list(data.splits) == [manifest.loc[s, "split"] for s in data.sequence_ids]
    assert {s: int(np.sum(data.splits == s)) for s in N_IMAGES} == N_IMAGES


def test_train_uses_train_rows_and_chooses_the_epoch_on_exactly_the_val_rows(
    trained: tuple[Config, Path, list],
) -> None:
    cfg, folder, subsets = trained
    data = load_labelled_data(cfg, preprocess=False)
    val_rows, train_rows = subsets  # one member: its validation rows, then its training rows
    assert set(data.sequence_ids[train_rows]) == set(data.sequence_ids[data.splits == "train"])
    assert list(val_rows) == list(np.flatnonzero(data.splits == "val"))
    test_rows = set(np.flatnonzero(data.splits == "test").tolist())
    assert not test_rows & set(np.concatenate(subsets).tolist())  # no test row was ever given to training

    info = json.loads((folder / "model.json").read_text())
    split = info["split"]
    assert (split["n_train"], split["n_val"], split["n_test_not_used"]) == (6, 3, 3)
    assert split["protocol"] == "dataset split: train 6 / val 3; test not used"
    assert "val_fraction" not in split and "val_subjects" not in split
    assert info["data"]["n_sequences"] == 9 and sum(info["data"]["class_counts"].values()) == 9
    assert info["data"]["max_frames"] == 1  # single images: prediction scores a video frame by frame
    assert 0.0 <= info["val_accuracy"] <= 1.0
    card = (folder / "README.md").read_text()
    assert "dataset split: train 6 / val 3; test not used; best epoch" in card and "--split test" in card
    assert "quote the CV" not in card and "held-out subject" not in card


def test_the_split_is_part_of_the_data_identity_and_the_prepared_file(
    trained: tuple[Config, Path, list], tmp_path: Path
) -> None:
    cfg, _, _ = trained
    data = load_labelled_data(cfg, preprocess=False)
    moved = data.splits.copy()
    moved[np.flatnonzero(moved == "val")[0]] = "train"
    assert data_identity(replace(data, splits=moved)) != data_identity(data)
    assert data_identity(replace(data, splits=None)) != data_identity(data)
    back = load_labelled_npz(save_labelled_data(tmp_path / "data.npz", data, "k"), "k")
    np.testing.assert_array_equal(back.splits, data.splits)
    np.testing.assert_array_equal(back.folds, data.folds)
    assert data_identity(back) == data_identity(data)


@pytest.mark.parametrize("verb", ["cv", "compare"])
def test_cv_and_compare_refuse_a_split_dataset_before_any_work(
    verb: str, fer_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    config = tmp_path / "fer.yaml"
    config.write_text(to_yaml(_cfg(fer_root, out)))
    assert main([verb, str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors  # the manifest's summary comes before it: the scan is what tells the split
    assert "has its own split" in errors[0] and "seqfer train" in errors[0]
    assert f"seqfer evaluate {out / 'model'} {fer_root} --format fer2013 --split test" in errors[0]
    assert not (out / "preprocess").exists() and not (out / "cv").exists() and not (out / "compare").exists()
