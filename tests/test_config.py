"""Config contract: YAML, defaults and `--set` overrides, validated with messages naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, check_paths, load_config, parse_override, to_yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["demo.yaml", "ckplus.yaml", "oulu.yaml"])
def test_shipped_configs_validate_and_round_trip(name: str, tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / name)
    (tmp_path / "again.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "again.yaml") == cfg  # what a run folder stores reloads to the same config


@pytest.mark.parametrize(
    ("text", "parts", "value"),
    [
        ("train.epochs=5", ["train", "epochs"], 5),
        ("preprocess.landmarks.track=false", ["preprocess", "landmarks", "track"], False),
        ("cv.run_folds=[0, 3]", ["cv", "run_folds"], [0, 3]),
        ("data.fold_file=null", ["data", "fold_file"], None),
        ("output_dir=runs/x", ["output_dir"], "runs/x"),
    ],
)
def test_parse_override_types(text: str, parts: list[str], value: object) -> None:
    assert parse_override(text) == (parts, value)


def test_overrides_apply_over_the_file() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.epochs=3", "model.streams=geometry"])
    assert cfg.train.epochs == 3 and cfg.model.streams == "geometry"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  fromat: ckplus\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "data.fromat" in str(err.value) and "unknown key" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(path)


def test_bad_override_value_names_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.format"):
        load_config(None, ["data.format=imagenet"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["train.epochs"])


def test_missing_config_file_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_missing_data_root_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.format=ckplus", f"data.root={tmp_path / 'absent'}"])
    with pytest.raises(ConfigError, match=r"data\.root: path does not exist"):
        check_paths(cfg, "x.yaml")


def test_effective_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "ckplus.yaml", ["train.lr=0.01"])
    path = tmp_path / "effective.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg
