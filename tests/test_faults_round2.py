"""Issue "Never wrong, never silent", second adversarial pass: the cases whose fix lives in the CLI, the config
system and the atomic writer. Each user mistake or environment refusal gives ONE ``error:`` line and exit code 2,
never a traceback; a legal long output name never fails at its temp file.

The cases whose fix lives in a stage, a scanner or a verb are tested beside that code (see the issue's note).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_datasets import make_ckplus_tree

from pipeline.cli import main
from pipeline.config import MAX_CONFIG_NODES
from stages.atomic_io import NAME_MAX, atomic_write_text, name_problem, temp_name

REPO = Path(__file__).resolve().parent.parent
DEMO_YAML = str(REPO / "configs" / "demo.yaml")


def _one_error_line(err: str) -> str:
    """stderr holds exactly one ``error:`` message (warnings may come before it) and no traceback; returns it."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert lines and lines[0].startswith("error: "), err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    return lines[0]


# --- 12. long output names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 200, 232, NAME_MAX])
def test_temp_names_stay_within_the_name_limit(tmp_path: Path, length: int) -> None:
    """A legal name of any length (up to 255 bytes) is written: its temp file's name is cut, not the write."""
    target = tmp_path / ("p" * (length - 4) + ".csv" if length > 4 else "p")
    assert len(temp_name(target).name.encode()) <= NAME_MAX
    atomic_write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left behind


def test_name_problem_is_found_before_any_work() -> None:
    assert name_problem(Path("out") / ("x" * 255)) is None
    assert "256 bytes" in name_problem(Path("out") / ("x" * 256))
    assert "bytes" in name_problem("é" * 128)  # 256 bytes in UTF-8, 128 characters


# --- 11. one error line for mistakes that raised tracebacks -------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["cv.run_folds=[7,9]", "data.folds=2"], "cv.run_folds: fold(s) [7, 9] do not exist with data.folds=2"),
        (["cv.run_folds=[-1]"], "cv.run_folds.0"),
        (["model.appearance.channels=[0]"], "model.appearance.channels.0"),
        (["model.appearance.channels=[16, -3]"], "model.appearance.channels.1"),
        (["seed=-1"], "seed"),
        (["train.lr=.inf"], "train.lr: Input should be a finite number"),
        (["train.weight_decay=.nan"], "train.weight_decay"),
    ],
)
def test_impossible_settings_are_config_errors(
    overrides: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for o in overrides for a in ("--set", o)]
    assert main(["config", "show", DEMO_YAML, *args]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert expected in err, err


@pytest.mark.parametrize("option, value", [("--seed", "-1"), ("--folds", "1")])
def test_manifest_rejects_impossible_numbers(
    tmp_path: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_ckplus_tree(tmp_path / "ck")
    code = main(
        ["manifest", str(root), "--format", "ckplus", "--folds", "2", option, value, "-o", str(tmp_path / "m.parquet")]
    )
    assert code == 2
    assert option in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "m.parquet").exists()


def test_large_config_is_called_large_not_an_alias_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that is merely large is not blamed on YAML aliases; an alias bomb is."""
    big = tmp_path / "big.yaml"
    big.write_text("data:\n  extra: [" + ", ".join(str(i) for i in range(MAX_CONFIG_NODES + 5)) + "]\n")
    assert main(["config", "show", str(big)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "too large" in line and "alias" not in line
    bomb = tmp_path / "bomb.yaml"
    rows = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    rows += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(5)]
    bomb.write_text("\n".join(rows) + "\n")
    assert main(["config", "show", str(bomb)]) == 2
    assert "aliases" in _one_error_line(capsys.readouterr().err)


# --- 11. the environment refusing a write: one error line, exit 2 --------------------------------------------------


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left")])
def test_os_errors_become_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: int, reason: str
) -> None:
    """Whatever write the environment refuses (read-only folder, full disk), the user reads the file and the
    system's reason; patched at the one writer every output goes through."""
    import stages.atomic_io as aio

    def refuse(path: Path) -> Path:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(aio, "temp_name", refuse)
    root = make_ckplus_tree(tmp_path / "ck")
    out = tmp_path / "m.parquet"
    assert main(["manifest", str(root), "--format", "ckplus", "--folds", "2", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert reason in line and "m.parquet" in line, line


def test_file_size_limit_reached_while_writing_is_one_error_line(tmp_path: Path) -> None:
    """``ulimit -f`` reached while writing the manifest: Python ignores SIGXFSZ, the write fails with EFBIG and
    the user reads one line (a real limit in a child process, not a patched error)."""
    resource = pytest.importorskip("resource")
    root = make_ckplus_tree(tmp_path / "ck")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "manifest",
            str(root),
            "--format",
            "ckplus",
            "--folds",
            "2",
            "-o",
            "m.parquet",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "File too large" in _one_error_line(proc.stderr)
    assert not (tmp_path / "m.parquet").exists()


# --- logging: -q, -v, --log-file (issue "The house as a map") ---------------------------------------------------


def test_quiet_keeps_errors_and_log_file_keeps_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_ckplus_tree(tmp_path / "ck")
    log_file = tmp_path / "seqfer.log"
    out = tmp_path / "m.parquet"
    args = ["manifest", str(root), "--format", "ckplus", "--folds", "2", "-o", str(out)]
    assert main(["-q", "--log-file", str(log_file), *args]) == 0
    assert out.exists()
    assert main(["-q", "--log-file", str(log_file), "config", "show", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "missing.yaml" in log_file.read_text() and " ERROR " in log_file.read_text()
    assert main(["-v", "-q", "config", "show", DEMO_YAML]) == 2
    assert "choose one" in _one_error_line(capsys.readouterr().err)


def test_python_warnings_read_as_one_plain_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging
    import warnings

    from pipeline.runtime.log import setup_logging

    setup_logging()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("a folder holds no images", UserWarning, "pipeline/x.py", 36)
    err = capsys.readouterr().err
    assert err == "warning: a folder holds no images\n", err
    logging.getLogger("pipeline.test").info("plain message")
    assert capsys.readouterr().err == "plain message\n"


# --- 13. one class: refused wherever labelled data enters -------------------------------------------------------


def test_a_hand_made_one_class_manifest_is_refused(tmp_path: Path) -> None:
    """A manifest given as data.manifest skips fold assignment (which refuses one class): it is checked too."""
    from data_manifests.errors import ManifestError
    from data_manifests.scan import build_manifest
    from data_manifests.schema import write_manifest
    from pipeline.config import load_config
    from pipeline.data.manifest import prepare_manifest

    root = make_ckplus_tree(tmp_path / "ck")
    df, meta, _ = build_manifest(root, "ckplus", n_folds=2)
    df.loc[df["labelled"], "label"] = "happy"
    path = write_manifest(df, tmp_path / "one.parquet", meta)
    cfg = load_config(DEMO_YAML, [f"data.manifest={path}", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ManifestError, match="only class 'happy'"):
        prepare_manifest(cfg)


def test_one_class_left_after_preprocessing_is_refused() -> None:
    from pipeline.data.labelled import _require_usable_classes
    from stages.errors import StageError

    _require_usable_classes(["happy", "anger", "happy"], 0)
    with pytest.raises(StageError, match=r"after preprocessing \(5 labelled sequence\(s\) excluded\).*'happy'"):
        _require_usable_classes(["happy", "happy"], 5)


# --- 3. two runs into one OUTPUT_DIR ----------------------------------------------------------------------------


def test_a_second_run_into_a_held_output_dir_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process holds OUTPUT_DIR (a run in progress): every writing verb refuses at once with one error
    line, before touching the manifest; once that run ends, the same command goes ahead."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pipeline.runtime.output_folder import hold_folder; "
            f"hold_folder({str(out)!r}); print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for verb in ("preprocess", "cv", "train"):
            # data.root need not exist for the demo format (it is generated): the refusal comes before that
            assert main([verb, DEMO_YAML, "--set", f"output_dir={out}", "--set", f"data.root={tmp_path / 'd'}"]) == 2
            line = _one_error_line(capsys.readouterr().err)
            assert "another seqfer run" in line and str(holder.pid) in line, line
        assert not (out / "manifest.parquet").exists() and not (tmp_path / "d").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["config", "show", DEMO_YAML]) == 0  # the CLI itself holds nothing between commands


def test_a_finished_command_releases_its_folders(tmp_path: Path) -> None:
    from pipeline.runtime.folder_lock import folder_in_use

    out, empty = tmp_path / "run", tmp_path / "empty"
    empty.mkdir()  # a dataset root that holds nothing: the command takes OUTPUT_DIR, then fails at the scan
    sets = ["--set", f"output_dir={out}", "--set", "data.format=ckplus", "--set", f"data.root={empty}"]
    assert main(["preprocess", DEMO_YAML, *sets]) == 2
    probe = subprocess.run(
        [sys.executable, "-c", f"from pipeline.runtime.output_folder import hold_folder; hold_folder({str(out)!r})"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert folder_in_use(out) is None


# --- 1. an environment failure is not a data row: exit code 3 ---------------------------------------------------


def test_preprocess_exits_3_when_the_environment_fails_items(
    tmp_path: Path, tiny_demo: Path, ray_session, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cache cannot be written (its trajectory shard folders are plain files): every item fails with its own true
    reason, the run goes to the end, and the exit code says the environment failed (3), not the data."""
    root = tiny_demo
    out = tmp_path / "run"
    shards = out / "cache" / "trajectory"
    shards.mkdir(parents=True)
    for i in range(256):  # every shard folder a plain file: no trajectory entry can be written
        (shards / f"{i:02x}").write_text("not a folder")
    sets = [
        "data.format=ckplus",
        f"data.root={root}",
        "data.folds=2",
        f"output_dir={out}",
        "preprocess.landmarks.backend=provided",
    ]
    code = main(["preprocess", DEMO_YAML, *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 3, err[-3000:]
    assert "came from the environment" in err and "Traceback" not in err
    assert "trajectory" in err  # the true cause names the path, not a cut-off Ray wrapper
