"""Fault injection: seqfer never destroys, mixes up or hangs on a user's work (issue 10).

Each test plants one fault a user can cause (a folder of their files at --out, edited labels under a finished CV
run, damaged cache entries, a FIFO named like a video, garbage JSON...) and asserts the documented outcome: an
``error:`` line with exit code 2 and nothing touched, a re-run of exactly what the fault invalidated, or a
reported row. Tiny fixtures: the session's 4-subject demo set, 2 folds, 2 epochs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_datasets import TINY_MODEL

from pipeline.cli import main
from pipeline.config import Config, load_config, to_yaml
from pipeline.cv.run import run_cv
from pipeline.data.labelled import LabelledData, load_labelled_data
from pipeline.preprocess.run import preprocess_dir, run_preprocess
from pipeline.runtime.output_folder import MARKER, check_replaceable, claim_folder
from pipeline.runtime.run_key import data_identity
from stages.atomic_io import atomic_path, atomic_write_text, file_lock
from stages.errors import StageError

REPO = Path(__file__).resolve().parent.parent
TINY = ["train.epochs=2", "train.batch_size=4", *TINY_MODEL, "data.folds=2", "ray.workers=2"]


def _config(root: Path, out: Path, *extra: str) -> Config:
    return load_config(None, ["data.format=ckplus", f"data.root={root}", f"output_dir={out}", *TINY, *extra])


def _write_config(cfg: Config, path: Path) -> Path:
    path.write_text(to_yaml(cfg))
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Config, LabelledData]:
    """The tiny demo preprocessed into its own output folder and cache."""
    cfg = _config(tiny_demo, tmp_path_factory.mktemp("faults"))
    return cfg, load_labelled_data(cfg)


# --- 1. a verb replaces or writes into only a folder it wrote itself ---------------------------------------------


def test_train_out_refuses_a_folder_of_someone_elses_files(prepared, tmp_path: Path, capsys) -> None:
    cfg, _ = prepared
    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work")
    (mine / "sub").mkdir()
    (mine / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = _tree(mine)
    config = _write_config(cfg, tmp_path / "c.yaml")
    assert main(["train", str(config), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(mine) in err and "Traceback" not in err
    assert _tree(mine) == before


def test_train_out_refuses_the_runs_own_output_dir(prepared, tmp_path: Path, capsys) -> None:
    cfg, _ = prepared
    before = _tree(Path(cfg.output_dir))
    config = _write_config(cfg, tmp_path / "c.yaml")
    assert main(["train", str(config), "--out", str(cfg.output_dir)]) == 2
    assert "error: " in capsys.readouterr().err
    assert _tree(Path(cfg.output_dir)) == before  # cache, manifest and preprocess outputs all kept


def test_train_replaces_its_own_model_folder_and_nothing_beside_it(prepared, tmp_path: Path) -> None:
    from pipeline.train.run import run_train

    cfg, data = prepared
    out = tmp_path / "model"
    for sibling in ("model.tmp", "model.old"):  # names the old code deleted without asking
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "keep.txt").write_text("mine")
    run_train(cfg, out_dir=out, data=data)
    assert (out / MARKER).is_file() and (out / "model.json").is_file()
    run_train(cfg, out_dir=out, data=data)  # its own folder: replaced
    assert (out / "model.safetensors").is_file()
    for sibling in ("model.tmp", "model.old"):
        assert (tmp_path / sibling / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.old", "model.tmp"]  # no leftovers


def test_every_folder_writing_verb_refuses_foreign_folders(prepared, tmp_path: Path) -> None:
    cfg, data = prepared
    foreign = tmp_path / "out"
    (foreign / "cv").mkdir(parents=True)
    (foreign / "cv" / "notes.txt").write_text("mine")
    (foreign / "preprocess").mkdir()
    (foreign / "preprocess" / "notes.txt").write_text("mine")
    other = cfg.model_copy(update={"output_dir": foreign})
    with pytest.raises(StageError, match="not written by seqfer"):
        run_cv(other, data, use_ray=False)
    with pytest.raises(StageError, match="not written by seqfer"):
        run_preprocess(other)
    assert (foreign / "cv" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (foreign / "cv").iterdir()) == ["notes.txt"]


def test_claim_folder_rules(tmp_path: Path) -> None:
    assert (claim_folder(tmp_path / "new", "cv") / MARKER).is_file()  # created and marked
    claim_folder(tmp_path / "new", "cv")  # ours: accepted again
    with pytest.raises(StageError, match="is a seqfer cv folder"):
        claim_folder(tmp_path / "new", "pictures")  # another verb's folder
    (tmp_path / "empty").mkdir()
    claim_folder(tmp_path / "empty", "pictures")  # an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(StageError, match="not a folder"):
        check_replaceable(tmp_path / "file", "model")
    legacy = tmp_path / "legacy_cv"
    legacy.mkdir()
    (legacy / "config.yaml").write_text("seed: 0\n")
    (legacy / "environment.json").write_text("{}")
    claim_folder(legacy, "cv", legacy=("config.yaml", "environment.json"))  # a pre-marker run folder: adopted
    assert (legacy / MARKER).is_file()


# --- 2. resume only what came from the same data and settings ----------------------------------------------------


def _with_labels_swapped(data: LabelledData) -> LabelledData:
    labels = data.labels.copy()
    i = 0
    j = int(np.flatnonzero(labels != labels[i])[0])
    labels[i], labels[j] = labels[j], labels[i]
    return dataclasses.replace(data, labels=labels)


def _without_one_subject(data: LabelledData) -> LabelledData:
    """``data`` less every sequence of its first subject (fewer usable sequences than when the folds ran)."""
    keep = np.flatnonzero(data.subjects != data.subjects[0])
    return dataclasses.replace(
        data,
        sequence_ids=data.sequence_ids[keep],
        subjects=data.subjects[keep],
        folds=data.folds[keep],
        labels=data.labels[keep],
        appearance=data.appearance[keep],
        trajectory=data.trajectory[keep],
        landmarks=None if data.landmarks is None else data.landmarks[keep],
        targets={k: v[keep] for k, v in data.targets.items()},
    )


def test_cv_reruns_folds_when_the_data_changed(prepared, tmp_path: Path, capsys) -> None:
    base, data = prepared
    cfg = base.model_copy(update={"output_dir": tmp_path / "run"})
    cfg.preprocess.cache_dir = base.cache_dir
    run_cv(cfg, data, use_ray=False)
    capsys.readouterr()
    run_cv(cfg, data, use_ray=False)
    assert "2 fold(s) already finished" in capsys.readouterr().err  # same data: resumed

    edited = _with_labels_swapped(data)
    assert data_identity(edited) != data_identity(data)
    summary = run_cv(cfg, edited, use_ray=False)
    assert "already finished" not in capsys.readouterr().err
    pred = pd.read_csv(tmp_path / "run" / "cv" / "predictions.csv")
    truth = {sid: edited.classes[label] for sid, label in zip(edited.sequence_ids, edited.labels, strict=True)}
    assert dict(zip(pred["sequence_id"], pred["label"], strict=True)) == truth  # the labels the models saw
    pooled = float((pred["label"] == pred["pred"]).mean())
    n = np.array([f["n_test"] for f in summary["folds"]])
    per_fold = np.array([f["accuracy"] for f in summary["folds"]])
    assert pooled == pytest.approx(float((per_fold * n).sum() / n.sum()))  # one set of results, not two

    fewer = _without_one_subject(edited)  # a sequence no longer usable: no IndexError, no stale rows
    run_cv(cfg, fewer, use_ray=False)
    pred = pd.read_csv(tmp_path / "run" / "cv" / "predictions.csv")
    assert sorted(pred["sequence_id"]) == sorted(fewer.sequence_ids.tolist())


def test_cv_resume_reruns_a_fold_whose_result_is_garbage(prepared, tmp_path: Path, capsys) -> None:
    base, data = prepared
    cfg = base.model_copy(update={"output_dir": tmp_path / "run"})
    run_cv(cfg, data, use_ray=False)
    (tmp_path / "run" / "cv" / "fold_0" / "result.json").write_text("")
    (tmp_path / "run" / "cv" / "fold_1" / "result.json").write_text("[1, 2")
    capsys.readouterr()
    summary = run_cv(cfg, data, use_ray=False)
    assert "unreadable" in capsys.readouterr().err
    assert summary["n_sequences"] == len(data.labels)
    assert json.loads((tmp_path / "run" / "cv" / "fold_0" / "result.json").read_text())["fold"] == 0


def test_compare_cell_key_covers_the_data(prepared) -> None:
    from pipeline.compare.run import _cell_key

    cfg, data = prepared
    assert _cell_key(cfg, [0, 1], data) == _cell_key(cfg, [0, 1], data)
    assert _cell_key(cfg, [0, 1], _with_labels_swapped(data)) != _cell_key(cfg, [0, 1], data)
    assert _cell_key(cfg, [0, 1], _without_one_subject(data)) != _cell_key(cfg, [0, 1], data)


# --- 3. damaged cache entries are recomputed, never silently dropped ---------------------------------------------


def _damage(cfg: Config, n: int = 1) -> list[str]:
    """Truncate one aligned and one trajectory entry of different ok sequences; returns their ids."""
    index = pd.read_parquet(preprocess_dir(cfg) / "index.parquet")
    ok = index[index["status"] == "ok"].iloc[:2]
    for level, row in zip(("aligned", "trajectory"), ok.itertuples(), strict=True):
        key = getattr(row, f"{level}_key")
        path = Path(cfg.cache_dir) / level / key[:2] / f"{key}.npz"
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return ok["sequence_id"].tolist()


def test_preprocess_recomputes_damaged_entries(prepared) -> None:
    cfg, _ = prepared
    damaged = _damage(cfg)
    summary = run_preprocess(cfg)
    assert summary.done == 2 and summary.n_failed == 0  # not "skipped (cached)"
    index = pd.read_parquet(preprocess_dir(cfg) / "index.parquet").set_index("sequence_id")
    assert not index.loc[damaged, "cached"].any()


def test_training_data_recomputes_damaged_entries_and_keeps_every_sequence(prepared, capsys) -> None:
    cfg, data = prepared
    _damage(cfg)  # after preprocessing ran: training is the first to read them
    capsys.readouterr()
    again = load_labelled_data(cfg, preprocess=False)
    assert "2 sequence(s) had a damaged or missing cache entry and were recomputed" in capsys.readouterr().err
    assert again.sequence_ids.tolist() == data.sequence_ids.tolist()
    np.testing.assert_array_equal(again.appearance, data.appearance)
    np.testing.assert_array_equal(again.trajectory, data.trajectory)


# --- 7. one atomic-write helper ----------------------------------------------------------------------------------


def test_atomic_write_leaves_the_old_file_and_no_temp_on_failure(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "result.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["result.json"]
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path, "x")


def test_atomic_writes_do_not_clobber_each_other(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    texts = [str(i) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_text, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts and os.listdir(tmp_path) == ["x.txt"]


def test_file_lock_waits_at_most_its_timeout_and_dies_with_its_holder(tmp_path: Path) -> None:
    """A held lock makes another holder wait, but never past its timeout (then it goes on unlocked, False); a
    holder killed with SIGKILL leaves nothing that blocks the next one."""
    import subprocess
    import sys
    import time

    lock = tmp_path / "sub" / "entry.lock"  # its folder is created
    with file_lock(lock, timeout=1.0) as first:
        assert first
        start = time.monotonic()
        with file_lock(lock, timeout=0.2) as second:
            assert not second
        assert 0.2 <= time.monotonic() - start < 2.0
    with file_lock(lock, timeout=0.2) as again:
        assert again  # released at the end of the block

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from stages.atomic_io import file_lock\nwith file_lock({str(lock)!r}, 5):\n"
            "    print('held', flush=True)\n    input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with file_lock(lock, timeout=0.1) as blocked:
            assert not blocked
        holder.kill()
        holder.wait(10)
        with file_lock(lock, timeout=2.0) as after:
            assert after
    finally:
        holder.kill()

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with file_lock(blocker / "entry.lock", timeout=1.0) as impossible:  # no folder can be made there
        assert not impossible


def test_no_module_writes_its_own_temp_file_and_renames_it() -> None:
    offenders = []
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/**/*.py"), *REPO.glob("data_manifests/**/*.py")]:
        if path.name == "atomic_io.py":
            continue
        text = path.read_text()
        if '+ ".tmp"' in text or '.tmp")' in text or "os.replace(tmp" in text or "tmp.replace(" in text:
            offenders.append(str(path.relative_to(REPO)))
    # only the video writer (OpenCV picks the container by suffix) and the model folder's whole-folder swap
    assert sorted(offenders) == ["data_manifests/demo/writers.py", "pipeline/model_folder/folder.py"]


# --- 4. no run waits forever ---------------------------------------------------------------------------------------


def _run_script(name: str, timeout: float) -> dict:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fault_scripts" / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_a_lost_ray_node_retries_its_items_on_the_remaining_actor() -> None:
    out = _run_script("ray_node_loss.py", timeout=240)  # its own 2-node cluster (ray.cluster_utils)
    assert out["removed_at"] is not None and out["nodes"] == 2  # both nodes worked before one was lost
    assert out["results"] == {str(i): i for i in range(16)}  # every item done, none failed, no hang


def test_local_default_starts_its_own_ray_and_a_dead_address_is_an_error() -> None:
    out = _run_script("ray_address.py", timeout=120)
    assert out["unreachable"].startswith("StageError: ray.address '127.0.0.1:1'")
    assert out["unreachable_seconds"] < 30
    assert out["local_cpus"] == 1.0  # RAY_ADDRESS naming a dead cluster did not matter
    # at exit, with the instance up: the monitor was killed before Ray's shutdown came to it (its SIGTERM handler
    # would wait on the GCS that shutdown stops first), the rest was stopped by ray.shutdown() called from
    # ray_start.stop_local_ray, not as Ray's exit handler (which pauses 0.5 s first); Ray's handler found it stopped
    assert out["shutdown_calls"] == [{"exiting_interpreter": False}], out.get("shutdown_calls")
    assert out["initialized_after_shutdown"] is False
    alive = out["alive_when_ray_stopped_it"]
    assert alive["monitor"] == [False] and alive["gcs_server"] == [True] and alive["raylet"] == [True], alive
    assert all(c is not None for cs in out["exit_codes"].values() for c in cs), out["exit_codes"]


def _sleeper_class() -> type:
    class Sleeper:  # defined in a function so Ray ships it by value (workers cannot import this test module)
        """Returns its item after sleeping that many seconds (a hung decoder stand-in); -1 never returns in time."""

        def run(self, x: float) -> float:
            import time

            time.sleep(60 if x < 0 else x)
            return x

    return Sleeper


def test_an_item_past_its_time_limit_becomes_a_timeout_and_the_rest_finish(ray_session) -> None:
    import ray

    from pipeline.runtime.ray_pool import ItemTimeout, stream_to_actors

    actor_cls = ray.remote(num_cpus=0)(_sleeper_class())
    items = [0.0, -1.0, 0.1, 0.2, 0.0, 0.1]
    results = dict(
        stream_to_actors(actor_cls.remote, 2, items, lambda a, x: a.run.remote(x), per_actor=1, item_timeout=3.0)
    )
    assert isinstance(results[-1.0], ItemTimeout)
    assert {x: r for x, r in results.items() if x >= 0} == {x: x for x in items if x >= 0}


def test_the_pool_shrinks_to_what_the_cluster_can_schedule(ray_session) -> None:
    import ray

    from pipeline.runtime.ray_pool import NoWorkers, stream_to_actors

    cpus = int(ray.cluster_resources()["CPU"])
    actor_cls = ray.remote(num_cpus=cpus)(_sleeper_class())  # only one such actor fits; the others never schedule
    results = dict(
        stream_to_actors(actor_cls.remote, 3, [0.0, 0.1, 0.2], lambda a, x: a.run.remote(x), start_timeout=5.0)
    )
    assert results == {0.0: 0.0, 0.1: 0.1, 0.2: 0.2}

    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("weights file missing")

    broken = ray.remote(num_cpus=0)(Broken)
    results = dict(stream_to_actors(broken.remote, 2, [1, 2], lambda a, x: a.run.remote(x), start_timeout=30.0))
    assert all(isinstance(r, NoWorkers) and "weights file missing" in str(r) for r in results.values())


def _in_thread(fn, timeout: float = 20.0):
    """fn() run in a thread bounded by ``timeout`` (a hang fails the test instead of the suite)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    return box["out"]


def test_a_fifo_named_like_a_video_is_refused_without_opening_it(tmp_path: Path) -> None:
    from pipeline.predict.inputs import input_from_path
    from stages.preprocess.decode import SequenceSource
    from stages.preprocess.sequence import SequenceConfig, SequenceProcessor

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    pin = _in_thread(lambda: input_from_path(fifo))
    assert pin.kind == "invalid" and "not a regular file" in pin.problem
    outcome = _in_thread(
        lambda: SequenceProcessor(SequenceConfig()).process(SequenceSource("clip", video_path=str(fifo)))
    )
    assert outcome.status == "unreadable" and "FIFO" in outcome.reason
    frames = tmp_path / "frames"
    frames.mkdir()
    os.mkfifo(frames / "000.png")
    outcome = _in_thread(
        lambda: SequenceProcessor(SequenceConfig()).process(
            SequenceSource("frames", frame_paths=(str(frames / "000.png"),))
        )
    )
    assert outcome.status == "unreadable" and "not a regular file" in outcome.reason


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path, capsys) -> None:
    lines = ["model:", "  appearance:", "    options:", "      a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 leaves
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert _in_thread(lambda: main(["config", "show", str(bomb)]), timeout=20) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bomb) in err and "expands to more than" in err


# --- 5. a user's bad file is an error: line, not a traceback -------------------------------------------------------


def test_a_config_that_is_not_utf8_is_an_error_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("seed: 0\n# réglages\n".encode("latin-1"))
    assert main(["config", "show", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a UTF-8" in err and "Traceback" not in err


def test_sigterm_during_preprocess_saves_what_is_done_and_exits_143(tiny_demo: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    cfg = _config(tiny_demo, tmp_path / "out", "ray.workers=1")  # one worker: several sequences are left to do
    config = _write_config(cfg, tmp_path / "c.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "preprocess", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        landmarks = Path(cfg.cache_dir) / "landmarks"
        while not list(landmarks.glob("*/*.npz")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "preprocess ended before the signal: " + proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted: preprocess stopped by signal 15" in err
    out = preprocess_dir(cfg)
    index = pd.read_parquet(out / "index.parquet")
    summary = json.loads((out / "summary.json").read_text())
    n_sequences = len(pd.read_parquet(cfg.manifest_path))
    # the index lists the batches whose results reached the driver: none yet is possible (the signal came while
    # the first batch ran), and then the summary is still written, not a traceback
    assert len(index) < n_sequences and (index["status"] == "ok").all()
    assert "not processed" in summary["interrupted"] and summary["done"] == len(index)
    again = run_preprocess(cfg)  # the same command again: finishes, reusing what was cached
    assert again.done + again.skipped == n_sequences and not again.failed and again.skipped >= len(index)


def test_sigterm_after_a_finished_batch_indexes_it(tiny_demo: Path, tmp_path: Path) -> None:
    """The signal comes right after the driver took in its first batch's result (a script sends it from there):
    that batch is in the index and the summary, the rest is left to a re-run."""
    import subprocess
    import sys

    cfg = _config(tiny_demo, tmp_path / "out", "ray.workers=1")
    config = _write_config(cfg, tmp_path / "c.yaml")
    script = REPO / "tests" / "fault_scripts" / "sigterm_after_first_result.py"
    done = subprocess.run(
        [sys.executable, str(script), str(config)], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 143, done.stderr[-3000:]
    assert "interrupted: preprocess stopped by signal 15" in done.stderr and "Traceback" not in done.stderr
    index = pd.read_parquet(preprocess_dir(cfg) / "index.parquet")
    summary = json.loads((preprocess_dir(cfg) / "summary.json").read_text())
    n_sequences = len(pd.read_parquet(cfg.manifest_path))
    assert 1 <= len(index) < n_sequences and (index["status"] == "ok").sum() >= 1
    assert "not processed" in summary["interrupted"] and summary["done"] == len(index)


@pytest.fixture(scope="module")
def model_folder(prepared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.train.run import run_train

    cfg, data = prepared
    return run_train(cfg, out_dir=tmp_path_factory.mktemp("deployed") / "model", data=data)


def _copy_model(model_folder: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(model_folder, dest)
    return dest


def _predict_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["predict", *args])
    return code, capsys.readouterr().err


def _an_image(tmp_path: Path, size: int = 64) -> Path:
    import cv2

    path = tmp_path / f"face{size}.png"
    cv2.imwrite(str(path), np.full((size, size, 3), 128, np.uint8))
    return path


def test_a_garbage_model_json_is_an_error_line(model_folder: Path, tmp_path: Path, capsys) -> None:
    folder = _copy_model(model_folder, tmp_path / "m")
    (folder / "model.json").write_bytes(b"\x00\xffnot json")
    code, err = _predict_cli([str(folder), str(_an_image(tmp_path)), "-o", str(tmp_path / "p.csv")], capsys)
    assert code == 2 and err.startswith("error: ") and "model.json" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("missing", "metadata lacks classes"),
        ("bad_json", "metadata is not valid"),
        ("absurd", "absurd sizes"),
        ("mismatch", "class names for a model with"),
    ],
)
def test_damaged_checkpoint_metadata_is_an_error_line(
    model_folder: Path, tmp_path: Path, capsys, damage: str, problem: str
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = _copy_model(model_folder, tmp_path / "m")
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as fh:
        meta = dict(fh.metadata())
    if damage == "missing":
        del meta["classes"]
    elif damage == "bad_json":
        meta["build"] = "{n_classes: 7"
    elif damage == "absurd":
        meta["build"] = json.dumps({**json.loads(meta["build"]), "n_classes": 10**12})
    else:
        meta["classes"] = json.dumps(json.loads(meta["classes"])[:-1])  # one name short of the outputs
    save_file(load_file(str(weights)), str(weights), metadata=meta)
    code, err = _predict_cli([str(folder), str(_an_image(tmp_path)), "-o", str(tmp_path / "p.csv")], capsys)
    assert code == 2 and err.startswith("error: ") and problem in err and str(weights) in err


def test_predict_refuses_a_cv_folder_with_a_garbage_fold_result(model_folder: Path, tmp_path: Path, capsys) -> None:
    import shutil

    cv = tmp_path / "cv"
    (cv / "fold_0").mkdir(parents=True)
    shutil.copy(model_folder / "model.safetensors", cv / "fold_0" / "model.safetensors")
    shutil.copy(model_folder / "config.yaml", cv / "config.yaml")
    (cv / "fold_0" / "result.json").write_text("")
    code, err = _predict_cli([str(cv), str(_an_image(tmp_path)), "-o", str(tmp_path / "p.csv")], capsys)
    assert code == 2 and err.startswith("error: ") and "result.json" in err


def test_predict_o_naming_a_folder_fails_before_any_work(model_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    out.mkdir()
    code, err = _predict_cli([str(model_folder), str(_an_image(tmp_path)), "-o", str(out)], capsys)
    assert code == 2 and "is a folder" in err
    assert list(out.iterdir()) == [] and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    "option", [["--window", "0"], ["--window", "-1"], ["--window", "nan"], ["--window", "2", "--stride", "0"]]
)
def test_bad_window_and_stride_are_usage_errors(model_folder: Path, tmp_path: Path, capsys, option) -> None:
    code, err = _predict_cli(
        [str(model_folder), str(_an_image(tmp_path)), "-o", str(tmp_path / "p.csv"), *option], capsys
    )
    assert code == 2 and err.startswith("error: ") and "positive number of seconds" in err


def test_a_1x1_image_says_it_is_too_small_and_a_duplicate_is_noted(model_folder: Path, tmp_path: Path, capsys) -> None:
    tiny, ok = _an_image(tmp_path, size=1), _an_image(tmp_path)
    out = tmp_path / "p.csv"
    code, err = _predict_cli([str(model_folder), str(tiny), str(ok), str(ok), "-o", str(out)], capsys)
    assert code == 1  # failed rows, not a crash
    assert "given more than once" in err
    rows = pd.read_csv(out)
    assert len(rows) == 2
    assert "1x1 pixels, too small" in rows.set_index("input").loc[str(tiny), "reason"]


def test_manifest_o_must_be_a_parquet_file(tiny_demo: Path, tmp_path: Path, capsys) -> None:
    for target in (tmp_path / "x.csv", tmp_path):
        assert main(["manifest", str(tiny_demo), "--format", "ckplus", "-o", str(target), "--folds", "2"]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "x.csv").exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_fold_advice_never_contradicts_the_two_fold_minimum() -> None:
    from data_manifests.errors import ManifestError
    from data_manifests.folds import assign_folds

    one_subject = pd.DataFrame(
        {"sequence_id": ["a", "b"], "subject": ["S1", "S1"], "label": ["happy", "sad"], "labelled": [True, True]}
    )
    with pytest.raises(ManifestError) as exc:
        assign_folds(one_subject, n_folds=2)
    assert "at most 1 folds" not in str(exc.value) and "at least 2 subjects" in str(exc.value)


# --- 6. a killed CV fold resumes from its last epoch ---------------------------------------------------------------


def test_a_killed_fold_resumes_from_its_last_epoch_with_identical_results(
    prepared, tmp_path: Path, kill_after_epoch
) -> None:
    import torch

    from pipeline.data.labelled import split_fold
    from stages.learning.training.fit import fit

    cfg, data = prepared
    train_idx, val_idx, _ = split_fold(data.subjects, data.folds, 0, 0.5, cfg.seed)
    train, val = data.subset(train_idx), data.subset(val_idx)
    tcfg = cfg.train.model_copy(update={"epochs": 4, "patience": 10})
    args = (cfg.model, len(data.classes), train, val, tcfg)
    whole = fit(*args, seed=3)

    killed, after = kill_after_epoch
    state = tmp_path / "train_state.pt"
    with pytest.raises(killed):
        fit(*args, seed=3, on_epoch=after(2), resume_path=state, resume_key="k")
    epochs = []
    resumed = fit(*args, seed=3, on_epoch=lambda row: epochs.append(row["epoch"]), resume_path=state, resume_key="k")
    assert epochs == [3, 4]  # epochs 1-2 were not run again
    assert resumed.best_epoch == whole.best_epoch
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole.history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history] == strip
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name

    epochs.clear()
    fit(*args, seed=3, on_epoch=lambda row: epochs.append(row["epoch"]), resume_path=state, resume_key="other")
    assert epochs == [1, 2, 3, 4]  # a state saved for other data or settings is never resumed


def test_a_throttled_training_state_repeats_only_the_unsaved_epochs(prepared, tmp_path: Path, kill_after_epoch) -> None:
    """``save_every_s``: with a write due only after a long interval, a run killed after epoch 2 left no state,
    so the rerun trains from epoch 1, and the final epoch's state is always written."""
    from pipeline.data.labelled import split_fold
    from stages.learning.training.fit import fit

    cfg, data = prepared
    train_idx, val_idx, _ = split_fold(data.subjects, data.folds, 0, 0.5, cfg.seed)
    args = (cfg.model, len(data.classes), data.subset(train_idx), data.subset(val_idx))
    tcfg = cfg.train.model_copy(update={"epochs": 3, "patience": 10})
    killed, after = kill_after_epoch
    state = tmp_path / "train_state.pt"
    with pytest.raises(killed):
        fit(*args, tcfg, seed=3, on_epoch=after(2), resume_path=state, resume_key="k", save_every_s=1e9)
    assert not state.exists()
    epochs = []
    fit(
        *args,
        tcfg,
        seed=3,
        on_epoch=lambda row: epochs.append(row["epoch"]),
        resume_path=state,
        resume_key="k",
        save_every_s=1e9,
    )
    assert epochs == [1, 2, 3] and state.is_file()  # the finished run's state: a rerun does nothing again
    epochs.clear()
    fit(*args, tcfg, seed=3, on_epoch=lambda row: epochs.append(row["epoch"]), resume_path=state, resume_key="k")
    assert epochs == []


def test_predict_resume_file_with_foreign_lines_is_recomputed_not_a_crash(
    model_folder: Path, tmp_path: Path, capsys
) -> None:
    image, out = _an_image(tmp_path), tmp_path / "p.csv"
    code, _ = _predict_cli([str(model_folder), str(image), "-o", str(out)], capsys)
    first = pd.read_csv(out)
    resume = tmp_path / "p.csv.resume.jsonl"
    resume.write_text('[1, 2]\n{"key": 5, "row": 1}\n"text"\n{"key": "k"}\n')  # lines seqfer never wrote
    code_again, err = _predict_cli([str(model_folder), str(image), "-o", str(out)], capsys)
    assert code_again == code and "Traceback" not in err
    pd.testing.assert_frame_equal(pd.read_csv(out), first)
