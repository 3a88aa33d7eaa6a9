"""CLI contract: each verb does its job through `main()`; user mistakes give one `error:` line and exit code 2,
never a traceback.

Tiny fixtures keep it brief. The whole pipeline through the CLI (`run`, then `train` and `predict` on its
result) is tests/test_end_to_end.py; compare's cells from prepared data are tests/test_compare.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fixtures_datasets import TINY_MODEL

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent
DEMO_YAML = str(REPO / "configs" / "demo.yaml")
TINY = ["train.epochs=1", "train.batch_size=4", *TINY_MODEL]


def _sets(*overrides: str) -> list[str]:
    return [arg for s in overrides for arg in ("--set", s)]


def _error_message(err: str) -> str:
    """stderr must be one `error: ...` message (an invalid config lists its keys on the following lines)."""
    assert err.startswith("error: ") and err.count("error: ") == 1 and "Traceback" not in err, err
    return err


def test_config_show_prints_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", DEMO_YAML, "--set", "train.epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "format: demo" in out


def test_demo_data_writes_a_ckplus_tree_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--subjects", "1", "--workers", "1", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    assert "1 subjects" in err and "seed 3" in err
    sequences = sorted(p for p in (out / "cohn-kanade-images").glob("S*/*") if p.is_dir())
    emotions = list((out / "Emotion").rglob("*_emotion.txt"))
    assert sequences and 0 < len(emotions) <= len(sequences)
    assert all(len(list(s.glob("*.png"))) >= 10 for s in sequences)  # DEFAULT_FRAMES: 10-30 frames
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(["demo-data", str(out), "--subjects", "1", "--workers", "1", "--seed", "3"]) == 0
    assert "already complete" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps


def test_demo_data_bad_layout_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo-data", str(tmp_path / "d"), "--layout", "casme"]) == 2
    assert "casme" in _error_message(capsys.readouterr().err)


def test_manifest_scans_a_tree_into_subject_independent_folds(
    tiny_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.parquet"
    assert main(["manifest", str(tiny_demo), "--format", "ckplus", "--folds", "2", "-o", str(out), "--csv"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    df = pd.read_parquet(out)
    assert out.with_suffix(".csv").is_file() and len(pd.read_csv(out.with_suffix(".csv"))) == len(df)
    labelled = df[df["labelled"]]
    assert len(labelled) == 8 and set(labelled["fold"]) == {0, 1}
    assert (labelled.groupby("subject")["fold"].nunique() == 1).all()


def test_manifest_on_unknown_layout_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "random").mkdir()
    code = main(["manifest", str(tmp_path), "--format", "ckplus", "-o", str(tmp_path / "m.parquet")])
    assert code == 2
    assert str(tmp_path) in _error_message(capsys.readouterr().err)


@pytest.fixture(scope="module")
def preprocessed(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Path, list[str]]:
    """`seqfer preprocess` of the tiny demo (CK+ layout) into a fresh output folder: (that folder, --set args)."""
    out = tmp_path_factory.mktemp("cli_run")
    args = _sets("data.format=ckplus", f"data.root={tiny_demo}", "data.folds=2", f"output_dir={out}", *TINY)
    assert main(["preprocess", DEMO_YAML, *args]) == 0
    return out, args


def test_preprocess_fills_index_and_cache_and_reruns_nothing(
    preprocessed: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, args = preprocessed
    index = pd.read_parquet(out / "preprocess" / "index.parquet")
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(index["sequence_id"]) == list(manifest["sequence_id"]) and (index["status"] == "ok").sum() >= 6
    assert len(list((out / "preprocess" / "landmarks").glob("*.parquet"))) == (index["status"] == "ok").sum()
    capsys.readouterr()
    assert main(["preprocess", DEMO_YAML, *args]) == 0
    assert "done 0," in capsys.readouterr().err


def test_cv_writes_a_run_folder_from_the_cache(preprocessed: tuple[Path, list[str]]) -> None:
    out, args = preprocessed
    assert main(["cv", DEMO_YAML, *args]) == 0
    summary = json.loads((out / "cv" / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    assert len(pd.read_csv(out / "cv" / "predictions.csv")) == sum(f["n_test"] for f in summary["folds"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--models", "skipnet,nonet"], "unknown appearance model(s) nonet; choose from"),
        (["--models", ""], "unknown appearance model(s) (none given)"),
        (["--streams", "geometry"], "unknown streams geometry; choose from appearance, fused"),
        (["--data", "absent.npz"], "absent.npz does not exist"),
    ],
)
def test_compare_rejects_bad_arguments_before_any_work(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = [str(tmp_path / f) if f.endswith(".npz") else f for f in flags]
    assert (
        main(["compare", DEMO_YAML, *flags, "--no-ray", *_sets(f"data.root={tmp_path / 'demo'}", f"output_dir={out}")])
        == 2
    )
    assert message in _error_message(capsys.readouterr().err)
    assert not (tmp_path / "demo").exists()  # no demo data generated, nothing preprocessed
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_train_and_run_check_paths_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("train", "run", "cv", "preprocess"):
        code = main([verb, str(REPO / "configs" / "ckplus.yaml"), *_sets(f"data.root={tmp_path / 'nowhere'}")])
        assert code == 2, verb
        line = _error_message(capsys.readouterr().err)
        assert "data.root" in line and "nowhere" in line, verb


def test_bad_config_key_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian:\n  epochs: 3\n")
    assert main(["preprocess", str(bad)]) == 2
    assert "trian" in _error_message(capsys.readouterr().err)


def test_predict_without_a_model_folder_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert main(["predict", str(tmp_path / "no_model"), str(video), "-o", str(tmp_path / "p.csv")]) == 2
    assert "no_model" in _error_message(capsys.readouterr().err)
    assert not (tmp_path / "p.csv").exists()


def test_a_command_exit_code_reaches_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """`seqfer predict` exits 1 when an input failed: main() must pass a command's exit code through."""
    import pipeline.predict.run

    monkeypatch.setattr(pipeline.predict.run, "run_predict", lambda *args, **kwargs: 3)
    assert main(["predict", "some_model", "some_input.mp4"]) == 1
    monkeypatch.setattr(pipeline.predict.run, "run_predict", lambda *args, **kwargs: 0)
    assert main(["predict", "some_model", "some_input.mp4"]) == 0


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["predict", "--bogus"], "No such option: --bogus (seqfer predict --help"),
        (["no-such-verb"], "No such command 'no-such-verb'"),
        (["evaluate"], "Missing argument 'model'"),
        (["cv", "a.yaml", "--set"], "--set"),
    ],
)
def test_a_command_line_typer_cannot_parse_is_one_message(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown verb or option, a missing argument: exit code 2 and one `error:` line, whichever click typer
    runs on (click itself, or typer's own copy of it since typer 0.2x, whose exceptions are not click's)."""
    assert main(argv) == 2
    assert said in _error_message(capsys.readouterr().err)


def test_the_console_script_exits_with_the_code_and_every_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m pipeline.cli` (what the `seqfer` script runs) ends the process itself once a command returned:
    its exit code, all of its output (the same as :func:`main` prints in process) and its log file's last record
    still arrive."""
    import subprocess
    import sys

    log_file = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "pipeline.cli", "--log-file", str(log_file)]
    done = subprocess.run([*cmd, "predict", "--bogus"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: No such option")
    assert "No such option" in log_file.read_text()
    capsys.readouterr()
    assert main(["config", "show", DEMO_YAML]) == 0
    in_process = capsys.readouterr().out
    shown = subprocess.run([*cmd, "config", "show", DEMO_YAML], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert shown.returncode == 0 and shown.stdout == in_process and in_process.count("\n") > 20, shown.stderr


def test_version_names_seqfer_and_the_libraries_behind_its_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"seqfer {version('seqfer')} (Python ") and f"torch {version('torch')}" in out, out
    assert "ray " in out and "dlib " in out and "not installed" not in out, out
