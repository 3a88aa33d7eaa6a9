"""The ready model by name (``fer2013`` wherever a model is accepted), `seqfer predict` without a model, and
``model.appearance.init``: weights copied from a source network, class rows matched by alias, a source of another
shape refused naming the settings, and the source's weights in the run key.

Source networks here are tiny and untrained (tests/test_predict.py's ``_cfg`` / ``_model``); the real ready model
is checked only for what the package promises about it (it loads by name, 7 classes with neutral, at most 20 MB,
its card says how it was made and under which terms).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import _cfg, _model

from pipeline.cv.run import config_hash_of
from pipeline.model_folder import ready
from pipeline.model_folder.folder import write_model_folder
from pipeline.model_folder.format import resolve_model_path, split_model_argument
from pipeline.model_folder.init import appearance_init, class_rows, init_identity
from pipeline.model_folder.load import load_model_bundle
from stages.errors import StageError
from stages.learning.models import ModelConfig, TrainConfig, build_model
from stages.learning.training.dataset import ArrayDataset
from stages.learning.training.fit import fit
from stages.learning.training.warm_start import AppearanceInit, apply_appearance_init

FER_CLASSES = ["anger", "disgust", "fear", "happy", "neutral", "sadness", "surprise"]
CK_CLASSES = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
APPEARANCE = ["model.streams=appearance", "model.input.appearance=peak"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of a tiny appearance-only network with FER2013's 7 classes."""
    cfg = _cfg(*APPEARANCE)
    model = _model(cfg, 3, n_classes=len(FER_CLASSES))
    return write_model_folder(tmp_path_factory.mktemp("src") / "model", model, cfg, FER_CLASSES, {"trained_at": "t"})


def _target_cfg(source: Path, *extra: str) -> ModelConfig:
    return _cfg(*APPEARANCE, f"model.appearance.init={source}", *extra).model


# ---- the ready model by name ------------------------------------------------------------------------------------


def test_the_shipped_ready_model_loads_by_name_and_says_what_it_is() -> None:
    bundle = load_model_bundle("fer2013")
    assert bundle.kind == "model" and bundle.path == ready.READY_DIR / "fer2013"
    assert sorted(bundle.classes) == FER_CLASSES  # FER2013's 7 classes, neutral included
    assert sum(f.stat().st_size for f in bundle.path.iterdir()) <= 20 * 2**20
    card = (bundle.path / "README.md").read_text()
    assert "seqfer train configs/fer2013.yaml" in card and "research" in card.lower()
    assert bundle.info["val_accuracy"] > 0.6  # FER2013 PublicTest, the split that chose its epoch
    assert bundle.image_model  # trained on single images: a video is labelled frame by frame


def test_a_folder_holding_a_model_wins_over_the_ready_name(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(source.parent)
    (source.parent / "fer2013").symlink_to(source)
    assert resolve_model_path("fer2013") == ("model", source.parent / "fer2013")


def test_a_ready_model_missing_from_the_installation_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ready, "READY_DIR", tmp_path / "nothing")
    with pytest.raises(StageError, match="ready model 'fer2013'.*missing from this installation"):
        resolve_model_path("fer2013")
    with pytest.raises(StageError, match="ready models, by name: fer2013"):
        resolve_model_path("fer2031")


# ---- seqfer predict [MODEL] INPUTS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fer2013", "a.mp4"], ("fer2013", ["a.mp4"])),
        (["{model}", "a.mp4", "b.jpg"], ("{model}", ["a.mp4", "b.jpg"])),
        (["{video}"], ("fer2013", ["{video}"])),  # inputs only: the ready model
        (["{video}", "b.jpg"], ("fer2013", ["{video}", "b.jpg"])),
        (["*.jpg"], ("fer2013", ["*.jpg"])),
        (["runs/mistyped", "a.mp4"], ("runs/mistyped", ["a.mp4"])),  # a mistyped model stays the model
    ],
)
def test_the_model_argument_is_optional(args: list[str], expected: tuple, source: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    fill = {"{model}": str(source), "{video}": str(video)}
    model, inputs = split_model_argument([fill.get(a, a) for a in args])
    assert (model, inputs) == (fill.get(expected[0], expected[0]), [fill.get(a, a) for a in expected[1]])


@pytest.mark.parametrize("args", [[], ["fer2013"]])
def test_a_model_without_inputs_is_refused(args: list[str]) -> None:
    with pytest.raises(StageError, match="no inputs to predict"):
        split_model_argument(args)


# ---- model.appearance.init --------------------------------------------------------------------------------------


def test_class_rows_match_through_the_aliases() -> None:
    assert class_rows(["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"], CK_CLASSES) == (
        0,
        None,  # contempt: FER2013 has none
        1,
        2,
        3,
        5,
        6,
    )


def test_init_copies_the_body_and_the_shared_class_rows(source: Path) -> None:
    cfg = _target_cfg(source)
    init = appearance_init(cfg, CK_CLASSES)
    torch.manual_seed(0)
    model = build_model(cfg, len(CK_CLASSES), 1, 16)
    fresh_contempt = model.appearance.classifier.weight[1].clone()
    assert apply_appearance_init(model, init) == 6
    src = load_model_bundle(source).models[0].appearance.state_dict()
    own = model.appearance.state_dict()
    for name, tensor in src.items():
        if not name.startswith("classifier."):
            assert torch.equal(own[name], tensor), name
    assert torch.equal(own["classifier.weight"][0], src["classifier.weight"][0])  # anger <- anger
    assert torch.equal(own["classifier.weight"][5], src["classifier.weight"][5])  # sadness <- sadness
    assert torch.equal(own["classifier.weight"][1], fresh_contempt)


def test_a_source_of_another_shape_is_refused_naming_the_settings(source: Path) -> None:
    cfg = _target_cfg(source, "model.appearance.channels=[8, 24]")
    with pytest.raises(StageError, match=r"model.appearance.channels: \[8, 16\] \(here \[8, 24\]\)"):
        appearance_init(cfg, CK_CLASSES)


def test_init_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="model folder not found"):
        appearance_init(_target_cfg(tmp_path / "absent"), CK_CLASSES)


def test_the_source_weights_are_in_the_run_key(source: Path, tmp_path: Path) -> None:
    other = write_model_folder(
        tmp_path / "other", _model(_cfg(*APPEARANCE), 4, len(FER_CLASSES)), _cfg(*APPEARANCE), FER_CLASSES, {}
    )
    cfg_a = _cfg(*APPEARANCE, f"model.appearance.init={source}")
    cfg_b = _cfg(*APPEARANCE, f"model.appearance.init={other}")
    assert init_identity(cfg_a.model) != init_identity(cfg_b.model)
    assert config_hash_of(cfg_a) != config_hash_of(cfg_b) != config_hash_of(_cfg(*APPEARANCE))


def test_training_starts_from_the_source(source: Path) -> None:
    """One epoch at a vanishing learning rate leaves the conv weights where the source had them."""
    cfg = _target_cfg(source)
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        rng.integers(0, 256, (8, 1, 32, 32), dtype=np.uint8),
        np.zeros((8, 16, 68, 2), np.float32),
        np.arange(8) % len(CK_CLASSES),
    )
    train = TrainConfig(epochs=1, batch_size=4, lr=1e-12)
    init = appearance_init(cfg, CK_CLASSES)
    result = fit(cfg, len(CK_CLASSES), data, None, train, seed=0, appearance_init=init)
    first_conv = next(k for k in init.state if k.endswith("weight") and init.state[k].ndim == 4)
    assert torch.allclose(result.model.appearance.state_dict()[first_conv], init.state[first_conv], atol=1e-6)
    plain = fit(cfg.model_copy(), len(CK_CLASSES), data, None, train, seed=0)
    assert not torch.allclose(plain.model.appearance.state_dict()[first_conv], init.state[first_conv])


def test_init_refuses_a_network_without_an_appearance_stream() -> None:
    init = AppearanceInit(state={}, class_rows=(None, None), source="x")
    model = build_model(ModelConfig(streams="geometry"), 2, 1, 16)
    with pytest.raises(StageError, match="no appearance stream"):
        apply_appearance_init(model, init)


def test_predict_with_inputs_only_uses_the_ready_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.predict.run
    from pipeline.cli import main

    seen = {}
    monkeypatch.setattr(pipeline.predict.run, "run_predict", lambda model, inputs, **kw: seen.update(m=model, i=inputs))
    image = tmp_path / "face.jpg"
    image.write_bytes(b"")
    assert main(["predict", str(image)]) == 0
    assert seen == {"m": "fer2013", "i": [str(image)]}


def test_init_passes_between_input_modes(source: Path) -> None:
    """A network trained on single images (peak) starts one that sees each of k frames (frames mode)."""
    cfg = _target_cfg(source, "model.input.appearance=frames", "model.input.k=3")
    model = build_model(cfg, len(CK_CLASSES), 3, 16)
    assert apply_appearance_init(model, appearance_init(cfg, CK_CLASSES)) == 6
