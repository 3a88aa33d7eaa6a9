"""CLI contract: every verb exists; user mistakes give one message and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_config_show_prints_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", str(REPO / "configs" / "demo.yaml"), "--set", "train.epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "format: demo" in out


@pytest.mark.parametrize(
    "verb", ["manifest", "demo-data", "preprocess", "cv", "train", "predict", "run", "config"]
)
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([verb, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_bad_config_key_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian:\n  epochs: 3\n")
    assert main(["preprocess", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "trian" in err and "Traceback" not in err


def test_manifest_on_unknown_layout_is_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "random").mkdir()
    code = main(["manifest", str(tmp_path), "--format", "ckplus", "-o", str(tmp_path / "m.parquet")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(tmp_path) in err and "Traceback" not in err


def test_missing_dataset_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cv", str(REPO / "configs" / "ckplus.yaml"), "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert code == 2
    assert "data.root" in capsys.readouterr().err


def test_a_command_exit_code_reaches_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """`seqfer predict` exits 1 when an input failed: main() must pass a command's exit code through."""
    import pipeline.predict

    monkeypatch.setattr(pipeline.predict, "run_predict", lambda *args, **kwargs: 3)
    assert main(["predict", "some_model", "some_input.mp4"]) == 1
    monkeypatch.setattr(pipeline.predict, "run_predict", lambda *args, **kwargs: 0)
    assert main(["predict", "some_model", "some_input.mp4"]) == 0
