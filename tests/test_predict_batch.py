"""Prediction at scale (issue 26): many single images in chunks, one network call per chunk, the same probabilities
bit for bit as one input at a time, on Ray and in process; a failed chunk retried one input per call; a killed
batch (SIGKILL) resumed without recomputing its finished rows.

The model is tests/test_predict.py's small untrained one; the faces are its shifted astronaut.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_predict import CLASSES, _cfg, _face, _model, _write_model, _write_video

import pipeline.predict.on_ray as on_ray
from pipeline.config import to_yaml
from pipeline.predict.chunks import CHUNK_MAX, chunk_size, make_chunks
from pipeline.predict.inputs import resolve_inputs
from pipeline.predict.predictor import Predictor
from pipeline.predict.results import result_columns, write_results
from pipeline.predict.resume import journal_path, load_resume, resume_journal
from pipeline.predict.rows import PredictOptions
from pipeline.predict.run import run_predict
from stages.learning.training.checkpoint import save_checkpoint

N_IMAGES = 24
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_model(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of single face images (img_00.png ...), a blank image, a missing file and a short video."""
    root = tmp_path_factory.mktemp("images")
    folder = root / "faces"
    folder.mkdir()
    for i in range(N_IMAGES):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), _face(i % 12))
    blank = root / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 120, np.uint8))
    return {
        "folder": folder,
        "blank": blank,
        "missing": root / "missing.jpg",
        "video": _write_video(root / "clip.mp4", [_face(s) for s in range(6)]),
    }


def _inputs(images: dict[str, Path]) -> list[str]:
    """Every face image, with a blank image, a missing file and a video among them."""
    faces = sorted(str(p) for p in images["folder"].iterdir())
    return [*faces[:5], str(images["blank"]), *faces[5:12], str(images["video"]), str(images["missing"]), *faces[12:]]


def _same_row(a: dict, b: dict) -> bool:
    """Rows equal field by field, NaN equal to NaN, floats bit for bit."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def _one_at_a_time(model_dir: Path, items: list[str]) -> list[dict]:
    predictor = Predictor.load(model_dir)
    return [predictor.predict(item).row(CLASSES) for item in items]


def _as_results_file(rows: list[dict], path: Path) -> str:
    """The text `seqfer predict` writes for ``rows`` (so that two runs compare bit for bit, as text)."""
    return write_results(rows, result_columns(CLASSES, False, False), path, "csv").read_text()


# ------------------------------------------------------------------------------------------ the batched path


def test_a_batch_equals_one_input_at_a_time_bit_for_bit(model_dir: Path, images: dict, tmp_path: Path) -> None:
    items = _inputs(images)
    single = _one_at_a_time(model_dir, items)
    assert {r["status"] for r in single} == {"ok", "no_face", "unreadable"}
    predictor = Predictor.load(model_dir)
    batched = [r.row(CLASSES) for r in predictor.predict_batch(items)]
    assert all(_same_row(a, b) for a, b in zip(batched, single, strict=True))
    reordered = [r.row(CLASSES) for r in predictor.predict_batch(items[::-1])][::-1]  # other neighbours, same bits
    assert all(_same_row(a, b) for a, b in zip(reordered, single, strict=True))

    cfg = _cfg()  # a fold ensemble: the mean over its networks is per input too
    cv = tmp_path / "cv"
    for fold, seed in enumerate((1, 2)):
        save_checkpoint(cv / f"fold_{fold}" / "model.safetensors", _model(cfg, seed), cfg.model, CLASSES, {})
    (cv / "config.yaml").write_text(to_yaml(cfg))
    ensemble = Predictor.load(cv)
    alone = [ensemble.predict(item).row(CLASSES) for item in items]
    together = [r.row(CLASSES) for r in ensemble.predict_batch(items)]
    assert all(_same_row(a, b) for a, b in zip(together, alone, strict=True))


def test_a_worker_of_single_images_loads_neither_pandas_nor_matplotlib(model_dir: Path, images: dict) -> None:
    """A prediction worker's start is on every predict and evaluate command's critical path: in a fresh process,
    building a worker and predicting a chunk of images (faces and a blank one) loads no pandas and pyarrow (~0.35 s)
    and no matplotlib. Each is needed only by what single images never ask for: a manifest, a windowed timeline,
    a picture."""
    faces = sorted(str(p) for p in images["folder"].iterdir())[:3]
    script = f"""
import sys
from pipeline.predict.inputs import input_from_path
from pipeline.predict.on_ray import PredictWorker
from pipeline.predict.rows import PredictOptions
worker = PredictWorker({str(model_dir)!r}, [], None, PredictOptions())
rows = worker.predict([(input_from_path(p), f"i{{i}}") for i, p in enumerate({[*faces, str(images["blank"])]!r})])
print([str(row["status"]) for row in rows])
print(sorted(m for m in ("pandas", "pyarrow", "matplotlib") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert out[-2] == "['ok', 'ok', 'ok', 'no_face']"
    assert out[-1] == "[]"


def test_a_failed_stacked_call_falls_back_to_one_call_per_input(
    model_dir: Path, images: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stages.learning.training.predict as module  # the Predictor imports it when it predicts

    items = _inputs(images)[:8]
    single = _one_at_a_time(model_dir, items)
    real = module.ensemble_proba

    def only_one(models, data, *args, **kwargs):
        if len(data[0]) > 1:
            raise RuntimeError("stacked call failed")
        return real(models, data, *args, **kwargs)

    monkeypatch.setattr(module, "ensemble_proba", only_one)
    batched = [r.row(CLASSES) for r in Predictor.load(model_dir).predict_batch(items)]
    assert all(_same_row(a, b) for a, b in zip(batched, single, strict=True))


def test_single_images_are_chunked_and_everything_else_goes_alone(images: dict) -> None:
    pins = resolve_inputs(_inputs(images))
    todo = [(pin, f"n{i}", f"k{i}") for i, pin in enumerate(pins)]
    chunks = make_chunks(todo, 1, PredictOptions())
    assert [item for chunk in chunks for item in chunk] == todo  # every input once, in order
    size = chunk_size(len(todo) - 1, 1)  # all but the video
    for chunk in chunks:
        if any(pin.kind == "video" for pin, _, _ in chunk):
            assert len(chunk) == 1
        assert len(chunk) <= size
    assert max(len(c) for c in chunks) == size > 1  # the missing file and the blank image share chunks
    assert all(len(c) == 1 for c in make_chunks(todo, 1, PredictOptions(window=1.0)))  # windows: one per call
    assert chunk_size(10**6, 2) == CHUNK_MAX and chunk_size(3, 2) == 1 and chunk_size(81, 2) == 11


# ------------------------------------------------------------------------------------------ on Ray


def test_a_chunked_ray_run_equals_one_input_at_a_time(
    model_dir: Path, images: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_session
) -> None:
    import pipeline.predict.run as run_module

    items = _inputs(images)
    seen: list[list[int]] = []
    real = run_module.run_on_ray

    def spy(bundle, overrides, cache, opts, chunks):
        seen.append([len(c) for c in chunks])
        return real(bundle, overrides, cache, opts, chunks)

    monkeypatch.setattr(run_module, "run_on_ray", spy)
    out = tmp_path / "ray.csv"
    assert run_predict(model_dir, items, output=out) == 2  # the blank image and the missing file
    assert max(seen[0]) > 1  # really chunked
    expected = _as_results_file(_one_at_a_time(model_dir, items), tmp_path / "expected.csv")
    assert out.read_text() == expected  # bit-identical across processes


def _chunk(*names: str) -> list[tuple]:
    return [(resolve_inputs([n])[0], n, f"key-{n}") for n in names]


def test_a_failed_chunk_is_retried_one_input_per_call(images: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk whose worker died goes again one input per call, where the crash is blamed on one input; a lone input
    past its time limit is a timeout row; no worker at all is an error row per input. Two calls are in flight per
    actor only for quick inputs (single images), one when a video is among them."""
    import ray

    from pipeline.runtime.failures import ItemTimeout, NoWorkers

    crashed, late, fine, unscheduled = _chunk("a.png", "b.png"), _chunk("c.png"), _chunk("d.png"), _chunk("e.png")
    calls: list[tuple[list[int], int, int]] = []

    def fake_stream(bundle, overrides, cache, opts, chunks, per_actor, max_tries):
        calls.append(([len(c) for c in chunks], per_actor, max_tries))
        for chunk in chunks:
            name = chunk[0][1]
            if len(calls) == 1:
                outcome = {
                    "a.png": ray.exceptions.ActorDiedError(),
                    "c.png": ItemTimeout("took longer than the 5 s time limit"),
                    "e.png": NoWorkers("no Ray worker could be started"),
                }.get(name, [{"input": name, "status": "ok"}])
            else:  # one input per call: a.png's worker dies again, b.png is fine
                outcome = ray.exceptions.ActorDiedError() if name == "a.png" else [{"input": name, "status": "ok"}]
            yield chunk, outcome

    class Bundle:
        classes = CLASSES
        config = _cfg()

    monkeypatch.setattr(on_ray, "_stream", fake_stream)
    monkeypatch.setattr("pipeline.runtime.ray_start.ensure_ray", lambda cfg: None)
    chunks = [crashed, late, fine, unscheduled]
    rows = dict(pair for pairs in on_ray.run_on_ray(Bundle(), [], None, PredictOptions(), chunks) for pair in pairs)
    assert calls == [([2, 1, 1, 1], 2, 1), ([1, 1], 1, on_ray.SINGLE_TRIES)]
    assert rows["key-d.png"]["status"] == "ok" and rows["key-b.png"]["status"] == "ok"
    assert rows["key-a.png"]["status"] == "error" and "worker died on this input" in rows["key-a.png"]["reason"]
    assert rows["key-c.png"]["status"] == "timeout" and "time limit" in rows["key-c.png"]["reason"]
    assert rows["key-e.png"]["status"] == "error" and "NoWorkers" in rows["key-e.png"]["reason"]
    assert len(rows) == 5

    calls.clear()
    video = str(images["video"])
    rows = dict(
        pair for pairs in on_ray.run_on_ray(Bundle(), [], None, PredictOptions(), [_chunk(video)]) for pair in pairs
    )
    assert calls == [([1], 1, 1)] and rows[f"key-{video}"]["status"] == "ok"


# ------------------------------------------------------------------------------------------ kill -9 and resume

_KILLED_RUN = """
import sys, time
from pathlib import Path
import pipeline.predict.chunks as chunks
import pipeline.predict.run as run
from pipeline.predict.predictor import Predictor

chunks.CHUNK_MAX = 4
run.RAY_MIN_INPUTS = 10**6  # in this process: the kill takes the whole batch down at once
real = Predictor.predict_batch

def slow(self, items, **kwargs):
    time.sleep(0.4)  # time for the test to kill the run between chunks
    return real(self, items, **kwargs)

Predictor.predict_batch = slow
run.run_predict(sys.argv[1], [sys.argv[2]], output=Path(sys.argv[3]))
"""


def test_a_killed_batch_resumes_without_recomputing_finished_rows(
    model_dir: Path, images: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.csv"
    journal = journal_path(out)
    glob = str(images["folder"] / "*.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(model_dir), glob, str(out)], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # killed before the end
    done = load_resume(journal)
    assert 8 <= len(done) < N_IMAGES

    import pipeline.predict.run as run_module

    predicted: list[str] = []
    real = Predictor.predict_batch

    def counting(self, items, **kwargs):
        predicted.extend(str(item.name) for item in items)
        return real(self, items, **kwargs)

    monkeypatch.setattr(run_module, "RAY_MIN_INPUTS", 10**6)
    monkeypatch.setattr(Predictor, "predict_batch", counting)
    capsys.readouterr()
    assert run_predict(model_dir, [glob], output=out) == 0
    assert f"{len(done)} input(s) already done" in capsys.readouterr().err
    assert len(predicted) == N_IMAGES - len(done)  # the finished rows were not recomputed
    assert not {row["input"] for row in done.values()} & set(predicted)
    faces = sorted(str(p) for p in images["folder"].iterdir())
    monkeypatch.setattr(Predictor, "predict_batch", real)
    assert out.read_text() == _as_results_file(_one_at_a_time(model_dir, faces), tmp_path / "expected.csv")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(lines) == N_IMAGES  # each row journalled once


def test_the_journal_goes_on_after_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "p.csv.resume.jsonl"
    with resume_journal(path) as record:
        record([("a", {"status": "ok"}), ("b", {"status": "no_face"}), ("c", {"status": "error"})])
    with open(path, "a") as fh:
        fh.write('{"key": "d", "row": {"sta')  # killed in the middle of a line
    with resume_journal(path) as record:
        record([("e", {"status": "ok"})])
    assert load_resume(path) == {"a": {"status": "ok"}, "b": {"status": "no_face"}, "e": {"status": "ok"}}
