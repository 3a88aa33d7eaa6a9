"""`seqfer predict` and the Predictor API: every input kind, every failure status, fold ensembles, windows,
pictures, batch output with resume, Ray batches equal to in-process ones, and the real media in ../shared.

Models here are small, seeded and untrained (prediction does not care how good they are); training is covered
by tests/test_train_deploy.py. Faces are scikit-image's astronaut (a real face dlib finds), shifted per frame.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_datasets import TINY_MODEL

from pipeline.config import Config, load_config, to_yaml
from pipeline.model_folder.folder import write_model_folder
from pipeline.model_folder.load import load_model_bundle
from pipeline.predict.inputs import resolve_inputs
from pipeline.predict.predictor import Predictor
from pipeline.predict.resume import journal_path
from pipeline.predict.rows import output_names
from pipeline.predict.run import run_predict
from pipeline.predict.windows import window_bounds
from stages.errors import StageError
from stages.learning.models import build_model, frames_for, in_channels_for
from stages.learning.training.checkpoint import save_checkpoint
from stages.learning.training.predict import predict_proba

CLASSES = ["happy", "sadness", "surprise"]
TINY = ["preprocess.align.size=48", *TINY_MODEL, "ray.workers=2"]
N_FACE = 8  # frames of the synthetic face clip


def _cli(args: list[str]) -> int:
    """The CLI's exit code. (pipeline.cli.main drops the code a command exits with; the click command
    returns it.)"""
    import typer

    from pipeline.cli import app

    return typer.main.get_command(app).main(args=args, prog_name="seqfer", standalone_mode=False) or 0


def _cfg(*extra: str) -> Config:
    return load_config(None, [*TINY, *extra])


def _model(cfg: Config, seed: int, n_classes: int = len(CLASSES)):
    torch.manual_seed(seed)
    model = build_model(cfg.model, n_classes, in_channels_for(cfg.model.input, False), cfg.preprocess.trajectory.length)
    return model.eval()


def _face(shift: int) -> np.ndarray:
    """BGR 256x256 astronaut face, shifted ``shift`` pixels right and down."""
    import skimage.data

    rgb = skimage.data.astronaut()[20:276, 100:356]
    moved = cv2.warpAffine(rgb, np.float32([[1, 0, shift], [0, 1, shift]]), (256, 256), borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(moved, cv2.COLOR_RGB2BGR)


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs of every kind, good and bad."""
    root = tmp_path_factory.mktemp("media")
    faces = [_face(s) for s in range(N_FACE)]
    blank = np.full((256, 256, 3), 120, np.uint8)
    folder = root / "frames"
    folder.mkdir()
    for i, f in enumerate(faces):
        cv2.imwrite(str(folder / f"img_{i + 1}.png"), f)  # numeric order, not lexicographic (img_10 ...)
    cv2.imwrite(str(root / "still.jpg"), faces[0])
    (root / "empty").mkdir()
    (root / "corrupt.mp4").write_bytes(b"\x00\x01 not a video at all" * 50)
    (root / "notes.xyz").write_text("hello")
    return {
        "video": _write_video(root / "face.mp4", faces),
        "frames": folder,
        "image": root / "still.jpg",
        "blank": _write_video(root / "blank.avi", [blank] * 6),
        "half": _write_video(root / "half.mp4", faces[:3] + [blank] * 9),
        "corrupt": root / "corrupt.mp4",
        "unknown": root / "notes.xyz",
        "missing": root / "missing.mp4",
        "empty": root / "empty",
        "root": root,
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_model(tmp_path_factory.mktemp("m") / "model")


def _write_model(folder: Path) -> Path:
    """The tests' model folder: :func:`_model` with seed 0 and :data:`CLASSES`."""
    cfg = _cfg()
    return write_model_folder(folder, _model(cfg, 0), cfg, CLASSES, {"trained_at": "test"})


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir)


# ------------------------------------------------------------------------------------------ inputs and statuses


@pytest.mark.parametrize(("kind", "n_frames"), [("video", N_FACE), ("frames", N_FACE), ("image", 1)])
def test_every_input_kind_gets_a_label_with_probabilities(
    predictor: Predictor, media: dict, kind: str, n_frames: int
) -> None:
    result = predictor.predict(media[kind])
    assert result.status == "ok", result.reason
    assert set(result.probabilities) == set(CLASSES)
    assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-9)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.n_frames == n_frames and result.face_ratio == 1.0


def test_single_image_has_zero_trajectory(predictor: Predictor, media: dict) -> None:
    appearance, trajectory = predictor.model_inputs(media["image"])
    assert appearance.shape[0] == 1 and appearance.shape[2:] == (32, 32)
    assert appearance.shape[1] == frames_for(predictor.bundle.model_input)
    assert all(np.array_equal(appearance[0, 0], c) for c in appearance[0])  # the one frame, repeated
    assert np.all(trajectory == 0)


def test_frame_folder_and_video_read_the_same_frames_in_numeric_order(media: dict) -> None:
    (pin,) = resolve_inputs([media["frames"]])
    assert [Path(p).name for p in pin.source.frame_paths] == [f"img_{i + 1}.png" for i in range(N_FACE)]


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("blank", "no_face", "no face in any of 6 frames"),
        ("half", "low_face_ratio", "face in 3/12 frames"),
        ("corrupt", "unreadable", "unreadable video"),
        ("unknown", "unreadable", "unsupported file type .xyz"),
        ("missing", "unreadable", "file not found"),
        ("empty", "unreadable", "no image frames"),
    ],
)
def test_failures_are_statuses_with_reasons(
    predictor: Predictor, media: dict, kind: str, status: str, reason: str
) -> None:
    result = predictor.predict(media[kind])
    assert result.status == status
    assert reason in result.reason
    assert result.probabilities is None and result.label is None
    row = result.row(CLASSES)
    assert math.isnan(row["confidence"]) and all(math.isnan(row[f"p_{c}"]) for c in CLASSES)


def test_too_short_from_min_frames(model_dir: Path, media: dict) -> None:
    strict = Predictor.load(model_dir, overrides=["preprocess.min_frames=20"])
    result = strict.predict(media["video"])
    assert result.status == "too_short" and f"{N_FACE} readable frames, need 20" in result.reason


def test_globs_lists_manifests_and_duplicates_expand(media: dict, tmp_path: Path) -> None:
    from data_manifests.schema import ManifestMeta, normalise, write_manifest

    root = media["root"]
    (tmp_path / "list.txt").write_text(f"# my clips\n{media['video']}\n\n{media['image']}\n")
    manifest = normalise(
        pd.DataFrame(
            [
                {
                    "sequence_id": "clip_a",
                    "dataset": "mine",
                    "subject": "s1",
                    "n_frames": N_FACE,
                    "source_type": "video",
                    "frame_paths": [],
                    "video_path": str(media["video"]),
                    "label": "happy",
                    "labelled": True,
                },
                {
                    "sequence_id": "clip_b",
                    "dataset": "mine",
                    "subject": "s2",
                    "n_frames": N_FACE,
                    "source_type": "frames",
                    "frame_paths": [str(p) for p in sorted(media["frames"].iterdir())],
                    "labelled": False,
                },
            ]
        )
    )
    write_manifest(manifest, tmp_path / "m.parquet", ManifestMeta(classes=CLASSES))
    pins = resolve_inputs(
        [
            str(root / "*.mp4"),
            str(tmp_path / "list.txt"),
            str(tmp_path / "m.parquet"),
            str(media["video"]),
            str(root / "nothing*.mov"),
        ]
    )
    names = [p.name for p in pins]
    assert names[:3] == [str(root / "corrupt.mp4"), str(root / "face.mp4"), str(root / "half.mp4")]
    assert names[3:] == [str(media["image"]), "clip_a", "clip_b", str(root / "nothing*.mov")]  # no duplicate
    by_name = {p.name: p for p in pins}
    assert by_name["clip_a"].true_label == "happy" and by_name["clip_b"].true_label is None
    assert by_name["clip_b"].kind == "manifest_row" and len(by_name["clip_b"].source.frame_paths) == N_FACE
    assert by_name[str(root / "nothing*.mov")].problem == "glob matched no files"


# ------------------------------------------------------------------------------------------ models


def test_cv_run_folder_is_a_fold_ensemble(media: dict, tmp_path: Path, predictor: Predictor) -> None:
    cfg = _cfg()
    cv = tmp_path / "run" / "cv"
    models = [_model(cfg, seed) for seed in (1, 2)]
    for fold, model in enumerate(models):
        save_checkpoint(cv / f"fold_{fold}" / "model.safetensors", model, cfg.model, CLASSES, {"fold": fold})
    (cv / "config.yaml").write_text(to_yaml(cfg))
    for path in (cv, tmp_path / "run"):  # the CV folder itself, or the OUTPUT_DIR holding it
        ensemble = Predictor.load(path)
        assert ensemble.bundle.kind == "cv" and len(ensemble.bundle.models) == 2
    appearance, trajectory = predictor.model_inputs(media["video"])
    expected = np.mean([predict_proba(m, (appearance, trajectory)) for m in models], axis=0)[0]
    result = ensemble.predict(media["video"])
    np.testing.assert_allclose([result.probabilities[c] for c in CLASSES], expected, rtol=0, atol=1e-12)
    single = predict_proba(models[0], (appearance, trajectory))[0]
    assert not np.allclose(expected, single)  # really averaged, not the first fold

    save_checkpoint(
        cv / "fold_2" / "model.safetensors", _model(cfg, 3, n_classes=2), cfg.model, ["happy", "sad"], {"fold": 2}
    )
    with pytest.raises(StageError, match="classes"):
        Predictor.load(cv)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_model_predicts_in_bfloat16_only_where_it_trained_in_it_and_the_cpu_computes_it(
    media: dict, tmp_path: Path, predictor: Predictor, precision: str, native: bool, monkeypatch
) -> None:
    """A model trained in bfloat16 predicts in bfloat16 only where the CPU computes it natively; elsewhere (where it
    would be emulated, several times slower) and for a float32 model, in float32."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cfg = _cfg(f"train.precision={precision}")
    model = _model(cfg, 0)
    loaded = Predictor.load(write_model_folder(tmp_path / "model", model, cfg, CLASSES, {"trained_at": "test"}))
    assert loaded.precision == ("bfloat16" if precision == "bfloat16" and native else "float32")
    appearance, trajectory = predictor.model_inputs(media["image"])
    expected = predict_proba(model, (appearance, trajectory), precision=loaded.precision)[0]
    result = loaded.predict(media["image"])
    assert np.array_equal([result.probabilities[c] for c in CLASSES], expected)


@pytest.mark.parametrize("trained", ["float32", "bfloat16"])
def test_an_auto_precision_model_predicts_in_the_precision_its_members_trained_in(
    tmp_path: Path, trained: str, monkeypatch
) -> None:
    """``train.precision: auto`` resolves per machine: model.json's member facts say what the networks trained in,
    and prediction follows them (a float32-trained model never predicts in bfloat16, even on a native CPU)."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    cfg = _cfg("train.precision=auto")
    info = {"trained_at": "test", "members": [{"seed": 0, "precision": trained}]}
    loaded = Predictor.load(write_model_folder(tmp_path / "model", _model(cfg, 0), cfg, CLASSES, info))
    assert loaded.bundle.trained_precision == trained
    assert loaded.precision == trained


def test_bad_model_paths_and_fixed_settings_are_user_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="not a model folder"):
        load_model_bundle(tmp_path)
    with pytest.raises(StageError, match="not found"):
        load_model_bundle(tmp_path / "nope")
    with pytest.raises(StageError, match="fixed by the trained weights"):
        load_model_bundle(model_dir, ["model.input.size=64"])
    with pytest.warns(UserWarning, match="landmarks.detector"):
        load_model_bundle(model_dir, ["preprocess.landmarks.detector=mmod"])


# ------------------------------------------------------------------------------------------ windows and pictures


def test_window_bounds_cover_the_whole_input() -> None:
    t = np.arange(50) / 10.0  # 5 s at 10 fps
    w = window_bounds(t, window=2.0, stride=1.0, frame_step=0.1)
    np.testing.assert_allclose(w.starts, [0, 1, 2, 3])
    np.testing.assert_allclose(w.ends, [2, 3, 4, 5])
    assert [len(m) for m in w.members] == [20] * 4 and w.members[-1][-1] == 49
    tail = window_bounds(np.arange(45) / 10.0, window=2.0, stride=2.0, frame_step=0.1)
    np.testing.assert_allclose(tail.starts, [0, 2, 2.5])  # last window flush with the end
    short = window_bounds(np.arange(5) / 10.0, window=2.0, stride=1.0, frame_step=0.1)
    assert len(short.starts) == 1 and len(short.members[0]) == 5


def test_window_timeline_follows_the_face(predictor: Predictor, media: dict) -> None:
    result = predictor.predict(media["half"], window=0.4, stride=0.2)  # 10 fps: 3 face frames, then 9 blank
    timeline = result.timeline
    assert list(timeline["window_start"]) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert list(timeline["status"]) == ["ok", "low_face_ratio", "no_face", "no_face", "no_face"]
    ok = timeline.iloc[0]
    assert math.isclose(sum(ok[f"p_{c}"] for c in CLASSES), 1.0, abs_tol=1e-9)
    assert result.status == "ok" and result.probabilities == {c: ok[f"p_{c}"] for c in CLASSES}


def test_cli_batch_writes_rows_timelines_pictures_and_resumes(
    model_dir: Path, media: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res.csv"
    args = [
        "predict",
        str(model_dir),
        str(media["video"]),
        str(media["blank"]),
        str(media["missing"]),
        "-o",
        str(out),
        "--window",
        "0.5",
        "--visualize",
        str(tmp_path / "vis"),
    ]
    assert _cli(args) == 1  # some inputs failed
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows.columns) == [
        "input",
        "status",
        "label",
        "confidence",
        *[f"p_{c}" for c in CLASSES],
        "n_frames",
        "face_ratio",
        "reason",
        "windows",
        "timeline",
    ]
    assert list(rows["input"]) == [str(media["video"]), str(media["blank"]), str(media["missing"])]
    assert list(rows["status"]) == ["ok", "no_face", "unreadable"]
    timeline = pd.read_csv(rows["timeline"][0])
    assert len(timeline) == rows["windows"][0] == 3  # 0.8 s at 10 fps, 0.5 s windows, stride 0.25 s
    assert Path(rows["timeline"][0]).with_suffix(".png").stat().st_size > 5000
    assert {p.name for p in (tmp_path / "vis").iterdir()} == {
        "face.mp4.png",
        "blank.avi.png",
        "missing.mp4.png",
        ".seqfer-folder",
    }  # pictures + seqfer's marker
    err = capsys.readouterr().err
    assert "failed 2" in err and "no_face 1" in err and "unreadable 1" in err

    def boom(*args, **kwargs):
        raise AssertionError("a finished input was recomputed")

    monkeypatch.setattr(Predictor, "predict", boom)
    assert _cli(args) == 1
    assert "3 input(s) already done" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out, keep_default_na=False), rows)


def test_jsonl_output_uses_null_for_missing_values(model_dir: Path, media: dict, tmp_path: Path) -> None:
    n_failed = run_predict(model_dir, [str(media["image"]), str(media["unknown"])], output=tmp_path / "r.jsonl")
    assert n_failed == 1
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert lines[0]["status"] == "ok" and lines[1]["status"] == "unreadable"
    assert lines[1]["label"] == "" and lines[1]["confidence"] is None and lines[1]["p_happy"] is None


def test_picture_of_a_prediction(predictor: Predictor, media: dict, tmp_path: Path) -> None:
    from pipeline.predict.visualize import save_prediction_picture

    result = predictor.predict(media["video"], keep=True)
    path = save_prediction_picture(result, CLASSES, tmp_path / "p.png")
    image = cv2.imread(str(path))
    assert image.shape[1] > 1000 and image.std() > 20  # a strip of frames, not an empty canvas


def test_output_names_are_unique_and_safe() -> None:
    names = output_names(["a/clip.mp4", "b/clip.mp4", "x y/odd name?.avi", "S005_001"])
    assert len(set(names)) == 4 and names[2] == "odd_name_.avi" and names[3] == "S005_001"
    assert names[0].startswith("clip.mp4-") and names[1].startswith("clip.mp4-")


def test_ray_batch_equals_in_process(model_dir: Path, media: dict, tmp_path: Path, ray_session) -> None:
    inputs = [str(media[k]) for k in ("video", "frames", "image", "blank", "corrupt")]
    assert run_predict(model_dir, inputs, output=tmp_path / "ray.csv") == 2  # 5 inputs >= RAY_MIN_INPUTS
    ray_rows = pd.read_csv(tmp_path / "ray.csv", keep_default_na=False)
    local = Predictor.load(model_dir)
    for row, item in zip(ray_rows.to_dict("records"), inputs, strict=True):
        expected = local.predict(item).row(CLASSES)
        assert row["status"] == expected["status"] and row["label"] == expected["label"]
        if row["status"] == "ok":
            for c in CLASSES:
                assert float(row[f"p_{c}"]) == expected[f"p_{c}"]  # bit-identical across processes


# ------------------------------------------------------------------------------------------ real media


def test_real_media(predictor: Predictor, shared_dir: Path, tmp_path: Path) -> None:
    media = shared_dir / "media"
    predictor = Predictor(predictor.bundle, cache_dir=tmp_path / "cache")  # face_noface.mov is decoded once
    portraits = sorted(media.glob("*-ph.jpg"))
    assert portraits
    results = {path.name: predictor.predict(path) for path in [media / "single_face.mp4", *portraits]}
    for name, result in results.items():
        assert result.status == "ok", (name, result.reason)
        assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-9)
    assert results["single_face.mp4"].n_frames == 72 and results["single_face.mp4"].face_ratio == 1.0
    no_face = predictor.predict(media / "no_face.mp4")
    assert (no_face.status, no_face.reason) == ("no_face", "no face in any of 95 frames")
    mixed = predictor.predict(media / "face_noface.mov", window=2.0)
    assert mixed.status == "ok"  # windows with the face predict
    statuses = list(mixed.timeline["status"])
    assert statuses[0] == "ok" and statuses[-1] == "no_face"
    whole = predictor.predict(media / "face_noface.mov")  # the same landmarks, from the cache
    assert whole.status == "low_face_ratio" and "below min_face_ratio" in whole.reason
    assert 0.3 < whole.face_ratio < 0.6


# ------------------------------------------------------------------------------------------ faults (issue 27)


@pytest.mark.parametrize("length", [232, 250])
def test_a_legal_long_output_name_is_written(model_dir: Path, media: dict, tmp_path: Path, length: int) -> None:
    """Case 12: a legal -o name near the 255-byte limit runs and is written (its journal and timeline folder are
    cut short with a hash, not refused at the end)."""
    out = tmp_path / ("p" * (length - 4) + ".csv")
    assert run_predict(model_dir, [str(media["image"])], output=out, window=1.0) == 0
    assert pd.read_csv(out)["status"].tolist() == ["ok"]
    assert all(len(p.name.encode()) <= 255 for p in tmp_path.iterdir())


def test_an_illegal_output_name_is_refused_before_any_work(model_dir: Path, media: dict, tmp_path: Path) -> None:
    out = tmp_path / ("p" * 300 + ".csv")
    with pytest.raises(StageError, match="300|304 bytes"):
        run_predict(model_dir, [str(media["image"])], output=out)
    assert list(tmp_path.iterdir()) == []  # nothing predicted, nothing written


def test_non_finite_weights_are_refused_when_the_model_loads(model_dir: Path, tmp_path: Path) -> None:
    """Case 2: a model folder whose weights hold NaN (a diverged training) is refused at load with the file, never
    used to predict."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    with safe_open(str(weights), "pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    name = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights), metadata=metadata)
    with pytest.raises(StageError, match="NaN or infinite"):
        load_model_bundle(broken)


@pytest.mark.parametrize(
    ("dtype", "bad"),
    [
        (torch.float32, float("nan")),
        (torch.float16, float("inf")),
        (torch.bfloat16, float("-inf")),
        (torch.float64, float("nan")),
        (torch.float32, None),  # finite weights of every dtype pass
    ],
)
def test_the_header_check_finds_non_finite_weights_of_any_float_dtype(
    model_dir: Path, tmp_path: Path, dtype: torch.dtype, bad: float | None
) -> None:
    """Without torch, from the bits in the file: a NaN or infinity in any floating-point tensor (float16, bfloat16,
    float32, float64) is found and named; integer tensors are not floating-point and never flagged."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from stages.learning.training.checkpoint_header import read_checkpoint_header

    with safe_open(str(model_dir / "model.safetensors"), "pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 3)
    tensors[name] = tensors[name].to(dtype)
    if bad is not None:
        tensors[name].view(-1)[3] = bad  # one value, not the first
    tensors["counter"] = torch.tensor([-1, 2**31 - 1], dtype=torch.int64)  # all bits set in one: not a float
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    if bad is None:
        assert read_checkpoint_header(path).classes == CLASSES
    else:
        with pytest.raises(StageError, match=f"not finite \\(NaN or infinite in {re.escape(name)}\\)"):
            read_checkpoint_header(path)


@pytest.fixture(scope="module")
def misfit_model(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' model folder with one tensor missing from its weights: its header reads, its network does not
    load (as weights saved by a seqfer whose network code differs)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    broken = tmp_path_factory.mktemp("misfit") / "model"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    with safe_open(str(weights), "pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in list(fh.keys())[1:]}
    save_file(tensors, str(weights), metadata=metadata)
    return broken


def test_weights_that_do_not_fit_the_network_fail_when_the_predictor_is_made(misfit_model: Path) -> None:
    """The bundle is read from the headers; its networks load when a Predictor is made (never mid-batch)."""
    bundle = load_model_bundle(misfit_model)
    assert bundle.classes == CLASSES and len(bundle.weight_files) == 1
    with pytest.raises(StageError, match="does not match its model config: .*Missing key"):
        Predictor(bundle)


def test_weights_that_do_not_fit_end_a_ray_batch_with_one_error(
    misfit_model: Path, media: dict, tmp_path: Path, ray_session
) -> None:
    """On Ray the workers load the networks: a model that does not load there ends the run with its one error
    (one line, no row written), not a failed row per input."""
    out = tmp_path / "out.csv"
    inputs = [str(media["image"]), str(media["video"]), str(media["frames"]), str(media["half"])]
    with pytest.raises(StageError, match="does not match its model config") as err:
        run_predict(misfit_model, inputs, output=out)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_a_driver_reads_a_model_without_torch(model_dir: Path) -> None:
    """`seqfer predict` / `evaluate`'s driver hands many inputs to Ray workers: it reads the model's classes,
    settings and fingerprint from the checkpoint headers, and never imports torch (1.5 s and 250 MB)."""
    import subprocess
    import sys

    code = (
        "import sys; import pipeline.cli, pipeline.predict.run, pipeline.predict.on_ray, pipeline.evaluate.run\n"
        "from pipeline.model_folder.load import load_model_bundle\n"
        f"b = load_model_bundle({str(model_dir)!r}); print(b.describe(), b.fingerprint, b.model_input.size)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "classes: " + ", ".join(CLASSES) in done.stdout


def test_non_finite_probabilities_are_a_failed_row_never_ok(
    predictor: Predictor, media: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 2: whatever makes the network's output non-finite, the row is not ok and says why."""
    import stages.learning.training.predict as module  # the Predictor imports it when it predicts

    monkeypatch.setattr(module, "ensemble_proba", lambda *a, **k: np.full((1, len(CLASSES)), np.nan))
    for kind, window in (("image", None), ("video", 0.5)):
        result = predictor.predict(media[kind], window=window)
        assert result.status != "ok" and "non-finite" in (result.reason or str(result.timeline)), kind
        assert result.probabilities is None


def test_a_results_file_another_run_writes_is_refused_at_once(model_dir: Path, media: dict, tmp_path: Path) -> None:
    """Case 3: two runs writing one -o file would mix their rows; the second is refused before any work."""
    import subprocess
    import sys

    out = tmp_path / "preds.csv"
    code = (
        "import time; from pipeline.runtime.folder_lock import hold_output; "
        f"h = hold_output({str(out)!r}); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StageError, match="another seqfer run"):
            run_predict(model_dir, [str(media["image"])], output=out)
        assert not out.exists() and not journal_path(out).exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_predict(model_dir, [str(media["image"])], output=out) == 0  # free once that run has ended
