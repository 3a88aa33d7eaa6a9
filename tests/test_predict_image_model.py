"""A model trained on single images (model.json's ``data.max_frames`` is 1, as FER2013's ready model) labels a
longer input frame by frame: every frame with a face is scored as an image of its own and the probabilities are
averaged, for a whole input, a window and a batch alike. A model trained on sequences keeps seeing the sequence.

Frames are scikit-image's astronaut shifted by a few pixels (two distinct "faces"), PNG files, so that a frame
inside a folder and the same picture alone decode to the same pixels; landmarks are found per frame (no tracking),
so both give the same model input.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fixtures_datasets import TINY_MODEL

from pipeline.config import load_config
from pipeline.model_folder.folder import write_model_folder
from pipeline.model_folder.load import load_model_bundle
from pipeline.predict.predictor import Predictor
from stages.learning.models import build_model, in_channels_for

CLASSES = ["happy", "sadness", "surprise"]
SETTINGS = ["preprocess.align.size=48", *TINY_MODEL, "preprocess.landmarks.track=false"]
SHIFTS = (0, 0, 0, 9, 9)  # three frames of one face, then two of another


def _face(shift: int) -> np.ndarray:
    """BGR 256x256 astronaut face, shifted ``shift`` pixels right and down."""
    import skimage.data

    rgb = skimage.data.astronaut()[20:276, 100:356]
    moved = cv2.warpAffine(rgb, np.float32([[1, 0, shift], [0, 1, shift]]), (256, 256), borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(moved, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``frames``: a folder of :data:`SHIFTS`' faces (frame_1.png ...); ``face_<shift>.png``: each face alone."""
    root = tmp_path_factory.mktemp("media")
    (root / "frames").mkdir()
    for i, shift in enumerate(SHIFTS):
        cv2.imwrite(str(root / "frames" / f"frame_{i + 1}.png"), _face(shift))
    for shift in set(SHIFTS):
        cv2.imwrite(str(root / f"face_{shift}.png"), _face(shift))
    return {"frames": root / "frames", **{f"face_{s}": root / f"face_{s}.png" for s in set(SHIFTS)}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same seeded network twice: ``image`` trained on single images (max_frames 1), ``sequence`` on 5-frame
    sequences."""
    cfg = load_config(None, SETTINGS)
    torch.manual_seed(0)
    channels = in_channels_for(cfg.model.input, False)
    net = build_model(cfg.model, len(CLASSES), channels, cfg.preprocess.trajectory.length)
    root = tmp_path_factory.mktemp("models")
    return {
        kind: write_model_folder(
            root / kind, net.eval(), cfg, CLASSES, {"trained_at": "test", "data": {"max_frames": frames}}
        )
        for kind, frames in (("image", 1), ("sequence", 5))
    }


def _probs(result) -> np.ndarray:
    assert result.ok, result.reason
    return np.array([result.probabilities[c] for c in CLASSES])


def test_only_a_model_trained_on_single_images_is_an_image_model(models: dict[str, Path]) -> None:
    assert load_model_bundle(models["image"]).image_model
    assert not load_model_bundle(models["sequence"]).image_model


def test_an_image_model_labels_a_frame_folder_by_the_mean_of_its_frames(
    models: dict[str, Path], media: dict[str, Path]
) -> None:
    predictor = Predictor.load(models["image"])
    alone = {s: _probs(predictor.predict(media[f"face_{s}"])) for s in set(SHIFTS)}
    assert not np.allclose(alone[0], alone[9], atol=1e-4)  # two faces the network tells apart
    expected = np.mean([alone[s] for s in SHIFTS], axis=0)
    whole = predictor.predict(media["frames"])
    assert whole.n_frames == len(SHIFTS)
    np.testing.assert_allclose(_probs(whole), expected, rtol=0, atol=1e-9)
    # a window over the whole folder is the same mean; the batch path gives the same as the input alone
    windowed = predictor.predict(media["frames"], window=100.0)
    np.testing.assert_allclose(_probs(windowed), expected, rtol=0, atol=1e-9)
    batch = predictor.predict_batch([media["face_0"], media["frames"], media["face_9"]])
    assert [r.probabilities for r in batch] == [
        predictor.predict(media["face_0"]).probabilities,
        whole.probabilities,
        predictor.predict(media["face_9"]).probabilities,
    ]


def test_each_window_of_an_image_model_is_the_mean_of_its_frames(
    models: dict[str, Path], media: dict[str, Path]
) -> None:
    """Overlapping windows (3 frames, stride 1 frame at the frame folders' 30 fps): each row is the mean of its own
    frames, each frame scored once for all the windows it is in."""
    predictor = Predictor.load(models["image"])
    alone = {s: _probs(predictor.predict(media[f"face_{s}"])) for s in set(SHIFTS)}
    fps = predictor.sequence_config.frames.fps
    result = predictor.predict(media["frames"], window=3 / fps, stride=1 / fps)
    rows = result.timeline.to_dict("records")
    assert len(rows) == len(SHIFTS) - 2
    for row in rows:  # the timeline's times are rounded to 0.1 ms
        members = [i for i in range(len(SHIFTS)) if row["window_start"] - 1e-3 <= i / fps < row["window_end"] - 1e-3]
        assert len(members) == 3, row
        expected = np.mean([alone[SHIFTS[i]] for i in members], axis=0)
        np.testing.assert_allclose([row[f"p_{c}"] for c in CLASSES], expected, rtol=0, atol=1e-9)


def test_an_image_model_scores_the_peak_frame_a_dataset_names(models: dict[str, Path], media: dict[str, Path]) -> None:
    """A manifest row of CK+, Oulu-CASIA or class folders names its peak frame (its label belongs to it): that frame
    is scored, not the mean; the same frames without a named peak (a folder given to `seqfer predict`) are
    averaged."""
    from stages.preprocess.decode import SequenceSource

    predictor = Predictor.load(models["image"])
    frames = tuple(str(media["frames"] / f"frame_{i + 1}.png") for i in range(len(SHIFTS)))
    source = SequenceSource("named", frame_paths=frames, peak_index=len(frames) - 1)
    as_trained = predictor.probabilities(*predictor.model_inputs(source))[0]  # the input built around the peak
    np.testing.assert_allclose(_probs(predictor.predict(source)), as_trained, rtol=0, atol=1e-9)
    unnamed = predictor.predict(SequenceSource("unnamed", frame_paths=frames))
    assert unnamed.probabilities == predictor.predict(media["frames"]).probabilities
    assert not np.allclose(as_trained, _probs(unnamed), atol=1e-4)


def test_a_manifest_row_of_a_dataset_ending_at_its_peak_is_scored_at_the_peak(
    models: dict[str, Path], media: dict[str, Path], tmp_path: Path
) -> None:
    """A CK+ / Oulu-CASIA row's label belongs to its last frame even with no peak index (an Oulu video's is unknown
    until decoded); a row of the user's own videos or folders without one is averaged like a path."""
    import pandas as pd

    from data_manifests.scan_common import sequence_row
    from data_manifests.schema import ManifestMeta, write_manifest
    from pipeline.predict.inputs import resolve_inputs

    frames = [str(media["frames"] / f"frame_{i + 1}.png") for i in range(len(SHIFTS))]
    rows = [
        sequence_row(sequence_id=f"{d}_row", dataset=d, subject="s", label="happy", label_note=None, frame_paths=frames)
        for d in ("oulu", "folder")
    ]
    video = sequence_row(
        sequence_id="oulu_video", dataset="oulu", subject="s", label="happy", label_note=None, video_path="/x.avi"
    )
    write_manifest(pd.DataFrame([*rows, video]), tmp_path / "m.parquet", ManifestMeta(classes=CLASSES))
    pins = {p.name: p for p in resolve_inputs([str(tmp_path / "m.parquet")])}
    assert pins["oulu_row"].peak_named and pins["oulu_video"].peak_named and not pins["folder_row"].peak_named
    predictor = Predictor.load(models["image"])
    as_trained = predictor.probabilities(*predictor.model_inputs(pins["oulu_row"]))[0]
    np.testing.assert_allclose(_probs(predictor.predict(pins["oulu_row"])), as_trained, rtol=0, atol=1e-9)
    assert predictor.predict(pins["folder_row"]).probabilities == predictor.predict(media["frames"]).probabilities


def test_a_sequence_model_keeps_seeing_the_sequence(models: dict[str, Path], media: dict[str, Path]) -> None:
    """The same network, trained on sequences: one input built from the whole sequence, not a mean of frames."""
    image, sequence = Predictor.load(models["image"]), Predictor.load(models["sequence"])
    appearance, trajectory = sequence.model_inputs(media["frames"])
    assert len(appearance) == 1
    seen = sequence.probabilities(appearance, trajectory)[0]
    np.testing.assert_allclose(_probs(sequence.predict(media["frames"])), seen, rtol=0, atol=1e-9)
    assert not np.allclose(_probs(image.predict(media["frames"])), seen, atol=1e-4)
