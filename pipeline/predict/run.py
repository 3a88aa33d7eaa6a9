"""`seqfer predict MODEL INPUT... [-o OUT] [--format csv|jsonl] [--window S] [--visualize DIR]`: the batch driver.

- MODEL: a model folder (`seqfer train`), a CV run folder (its fold models are ensembled) or an OUTPUT_DIR.
- INPUT: videos, frame folders, images, globs, manifests, .txt lists (see :mod:`pipeline.predict.inputs`).
- Results: one row per input, written to ``-o`` (default ``predictions.csv``, or ``predictions.jsonl`` with
  ``--format jsonl``; a ``.jsonl`` output name picks JSONL by itself): ``input, status, label, confidence,
  p_<class>..., n_frames, face_ratio, reason`` (+ ``true_label`` for manifest inputs, + ``windows, timeline``
  with ``--window``). Rows keep the order of the inputs. Missing values are empty cells (CSV) or null (JSONL).
- ``--window S``: sliding windows of S seconds (stride S/2 unless ``--stride``); per input a timeline CSV and
  PNG in ``<OUT stem>_timelines/``; the row's probabilities are the mean over windows with a usable face.
- ``--visualize DIR``: a key-frame picture per input (:mod:`pipeline.predict.visualize`).
- Many inputs run on Ray (``ray.workers`` actors, each holding one :class:`Predictor`; ``--set
  ray.workers=N``), fewer than ``RAY_MIN_INPUTS`` in this process. A progress bar shows rate and ETA; a summary
  (done / resumed / failed with reasons) ends the run.
- Resume: every finished row is appended to ``<OUT>.resume.jsonl`` at once; a re-run with the same model,
  inputs (same files, sizes, mtimes) and options reuses those rows instead of recomputing (rows with status
  ``error`` are retried). Delete that file to recompute everything.
- Exit code (CLI): 0 when every input is ok, 1 when any is not (the summary says which and why).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import ConfigError
from pipeline.model_folder.folder import ModelBundle, load_model_bundle
from pipeline.predict.inputs import PredictInput, resolve_inputs
from pipeline.predict.predictor import PredictionResult, Predictor
from pipeline.runtime.output_folder import claim_folder
from pipeline.runtime.progress import RunSummary, progress_bar
from pipeline.runtime.run_key import run_key
from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.preprocess.cache import source_fingerprint
from stages.record import SequenceStatus

__all__ = ["Predictor", "PredictionResult", "PredictOptions", "run_predict", "predict_row"]

RAY_MIN_INPUTS = 4
"""Batches smaller than this run in the calling process: starting Ray and its workers costs seconds."""

FORMATS = ("csv", "jsonl")
RETRY_STATUSES = frozenset({SequenceStatus.ERROR, SequenceStatus.TIMEOUT})  # retried on resume


@dataclass(frozen=True)
class PredictOptions:
    """Per-input options of a batch: window/stride (s), where timelines and pictures go (None = not wanted)."""

    window: float | None = None
    stride: float | None = None
    timeline_dir: str | None = None
    visualize_dir: str | None = None


def predict_row(predictor: Predictor, pin: PredictInput, out_name: str, opts: PredictOptions) -> dict:
    """Predict one input and write its side files (timeline CSV/PNG, picture); returns its result row.

    Never raises: a failure to draw is noted in ``reason`` and the prediction is kept.
    """
    from pipeline.predict.visualize import save_prediction_picture, save_timeline_png

    result = predictor.predict(pin, window=opts.window, stride=opts.stride, keep=opts.visualize_dir is not None)
    row = result.row(predictor.classes)
    notes = []
    if opts.window is not None:
        row["windows"] = 0 if result.timeline is None else len(result.timeline)
        row["timeline"] = ""
        if result.timeline is not None and len(result.timeline):
            csv_path = Path(opts.timeline_dir) / f"{out_name}.csv"
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            result.timeline.to_csv(csv_path, index=False)
            row["timeline"] = str(csv_path)
            try:
                save_timeline_png(
                    result.timeline,
                    predictor.classes,
                    csv_path.with_suffix(".png"),
                    title=f"{pin.name}: probabilities per {opts.window:g} s window",
                )
            except Exception as exc:  # a picture must never cost the prediction
                notes.append(f"timeline plot failed: {type(exc).__name__}: {exc}")
    if opts.visualize_dir is not None:
        try:
            save_prediction_picture(
                result,
                predictor.classes,
                Path(opts.visualize_dir) / f"{out_name}.png",
                fps=predictor.sequence_config.frames.fps,
            )
        except Exception as exc:
            notes.append(f"picture failed: {type(exc).__name__}: {exc}")
    if notes:
        row["reason"] = "; ".join([row["reason"], *notes]) if row["reason"] else "; ".join(notes)
    return row


class PredictWorker:
    """A Ray actor: loads the model once, predicts inputs one by one."""

    def __init__(self, model_path: str, overrides: list[str], cache_dir: str | None, opts: PredictOptions) -> None:
        import cv2
        import torch

        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        self.predictor = Predictor.load(model_path, overrides, cache_dir=cache_dir)
        self.opts = opts

    def predict(self, pin: PredictInput, out_name: str) -> dict:
        return predict_row(self.predictor, pin, out_name, self.opts)


# ------------------------------------------------------------------------------------------------ helpers


def output_names(names: list[str]) -> list[str]:
    """File-name-safe stems for side files, unique per batch: the input's base name, with a short hash of the
    full name added when two inputs share a base name."""
    bases = []
    for name in names:
        base = Path(name.rstrip("/\\")).name or name
        bases.append(re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:80] or "input")
    counts = Counter(bases)
    return [
        b if counts[b] == 1 else f"{b}-{hashlib.sha256(n.encode()).hexdigest()[:8]}"
        for b, n in zip(bases, names, strict=True)
    ]


def _input_key(bundle_id: str, pin: PredictInput, opts: PredictOptions) -> str:
    identity = (
        source_fingerprint(list(pin.source.frame_paths), pin.source.video_path)
        if pin.source is not None
        else pin.problem
    )
    return run_key(
        "predict",
        bundle_id,
        pin.name,
        identity,
        pin.true_label,
        opts.window,
        opts.stride,
        opts.visualize_dir is not None,
    )


def _load_resume(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill: that input is simply recomputed
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("row"), dict)):
            continue  # not a line this code wrote: ignored, that input is recomputed
        if entry["row"].get("status") not in RETRY_STATUSES:
            done[entry["key"]] = entry["row"]
    return done


def _jsonable(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_results(rows: list[dict], columns: list[str], path: Path, fmt: str) -> Path:
    """Write result rows (atomically: temp file + rename) as CSV or JSONL with ``columns`` in order."""
    with atomic_path(path) as tmp:
        if fmt == "csv":
            pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)
        else:
            with open(tmp, "w") as fh:
                for row in rows:
                    fh.write(json.dumps({c: _jsonable(row.get(c)) for c in columns}) + "\n")
    return path


def _pick_format(output: Path | None, fmt: str | None) -> tuple[Path, str]:
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt is None:
        fmt = "jsonl" if output is not None and output.suffix.lower() in (".jsonl", ".json") else "csv"
    return (Path(output) if output is not None else Path(f"predictions.{fmt}")), fmt


def _error_row(pin: PredictInput, classes: list[str], reason: str) -> dict:
    return PredictionResult(pin.name, SequenceStatus.ERROR, reason, true_label=pin.true_label).row(classes)


def _run_on_ray(
    bundle: ModelBundle,
    overrides: list[str],
    cache_dir: str | None,
    opts: PredictOptions,
    todo: list[tuple[PredictInput, str, str]],
) -> Iterator[tuple[str, dict]]:
    """Stream ``todo`` through ``ray.workers`` actors, one call in flight per actor (so a crash is blamed on
    exactly one input). A worker that dies (segfault, out of memory) gives its input an ``error`` row and is
    replaced; the batch goes on."""
    import ray

    from pipeline.runtime.ray_pool import ItemTimeout, ensure_ray, landmark_worker_options, stream_to_actors

    ensure_ray(bundle.config.ray)
    worker_cls = ray.remote(**landmark_worker_options(bundle.config.ray))(PredictWorker)

    def start() -> object:
        return worker_cls.remote(str(bundle.path), overrides, cache_dir, opts)

    ray_cfg = bundle.config.ray
    stream = stream_to_actors(
        start,
        min(ray_cfg.workers, len(todo)),
        todo,
        lambda actor, t: actor.predict.remote(t[0], t[1]),
        per_actor=1,
        item_timeout=ray_cfg.item_timeout,
        start_timeout=ray_cfg.start_timeout,
    )
    for (pin, _name, key), row in stream:
        if isinstance(row, ItemTimeout):
            row = PredictionResult(pin.name, SequenceStatus.TIMEOUT, str(row), true_label=pin.true_label).row(
                bundle.classes
            )
        elif isinstance(row, ray.exceptions.RayActorError):
            row = _error_row(pin, bundle.classes, f"worker died on this input: {type(row).__name__}")
        elif isinstance(row, BaseException):
            row = _error_row(pin, bundle.classes, f"{type(row).__name__}: {str(row)[:300]}")
        yield key, row


def run_predict(
    model: Path | str,
    inputs: list[str],
    output: Path | None = None,
    fmt: str | None = None,
    window: float | None = None,
    visualize: Path | None = None,
    overrides: list[str] | None = None,
    stride: float | None = None,
    cache_dir: Path | None = None,
) -> int:
    """Predict every input, write the results file (see the module doc); returns the number of inputs whose
    status is not ok (resumed rows included)."""
    start = time.perf_counter()
    overrides = list(overrides or [])
    bundle = load_model_bundle(model, overrides)
    output, fmt = _pick_format(output, fmt)
    if output.is_dir():
        raise StageError(f"-o {output}: is a folder; give a file name for the results, e.g. {output}/predictions.{fmt}")
    for name, value in (("--window", window), ("--stride", stride)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} {value}: must be a positive number of seconds")
    duplicates: list[str] = []
    pins = resolve_inputs(inputs, duplicates)
    if duplicates:
        print(
            f"predict: note: {len(duplicates)} input(s) given more than once, predicted once: "
            + ", ".join(sorted(set(duplicates))[:5])
            + (" ..." if len(set(duplicates)) > 5 else ""),
            file=sys.stderr,
        )
    print(f"predict: {len(pins)} input(s) with {bundle.describe()}", file=sys.stderr)
    names = output_names([p.name for p in pins])
    opts = PredictOptions(
        window=window,
        stride=None if window is None else (stride if stride is not None else window / 2),
        timeline_dir=None if window is None else str(output.absolute().with_name(output.stem + "_timelines")),
        visualize_dir=None if visualize is None else str(Path(visualize).absolute()),
    )
    for folder, kind in ((opts.timeline_dir, "timelines"), (opts.visualize_dir, "pictures")):
        if folder is not None:
            claim_folder(folder, kind)
    bundle_id = bundle.fingerprint
    keys = [_input_key(bundle_id, p, opts) for p in pins]
    resume_path = output.with_name(output.name + ".resume.jsonl")
    done = _load_resume(resume_path)
    rows: dict[str, dict] = {k: done[k] for k in keys if k in done}
    todo = [(p, n, k) for p, n, k in zip(pins, names, keys, strict=True) if k not in rows]
    if rows:
        print(f"predict: {len(rows)} input(s) already done in {resume_path}, not recomputed", file=sys.stderr)

    cache = None if cache_dir is None else str(Path(cache_dir).absolute())
    bar = progress_bar(len(todo), "predict", unit="input")
    resume_path.parent.mkdir(parents=True, exist_ok=True)
    n_failed = 0
    try:
        with open(resume_path, "a") as log:
            if len(todo) >= RAY_MIN_INPUTS or bundle.config.ray.address:
                results = _run_on_ray(bundle, overrides, cache, opts, todo)
            else:
                predictor = Predictor(bundle, cache_dir=cache)
                results = ((k, predict_row(predictor, p, n, opts)) for p, n, k in todo)
            for key, row in results:
                rows[key] = row
                log.write(json.dumps({"key": key, "row": row}) + "\n")
                log.flush()
                bar.update(1)
                if row["status"] != SequenceStatus.OK:
                    n_failed += 1
                    bar.set_postfix_str(f"failed {n_failed}")
    finally:
        bar.close()

    ordered = [rows[k] for k in keys]
    columns = [
        "input",
        "status",
        "label",
        "confidence",
        *[f"p_{c}" for c in bundle.classes],
        "n_frames",
        "face_ratio",
        "reason",
    ]
    if any(p.true_label is not None for p in pins):
        columns.append("true_label")
    if window is not None:
        columns += ["windows", "timeline"]
    write_results(ordered, columns, output, fmt)

    failed = [(r["input"], f"{r['status']}: {r['reason']}") for r in ordered if r["status"] != SequenceStatus.OK]
    resumed_ok = sum(done[k]["status"] == SequenceStatus.OK for k in keys if k in done)
    summary = RunSummary(
        title="predict",
        done=len(ordered) - len(failed) - resumed_ok,
        skipped=resumed_ok,
        failed=failed,
        seconds=time.perf_counter() - start,
    )
    labels = Counter(r["label"] for r in ordered if r["status"] == SequenceStatus.OK)
    if labels:
        summary.extra["labels"] = ", ".join(f"{c} {n}" for c, n in labels.most_common())
    summary.extra["results"] = str(output)
    print(summary.text(), file=sys.stderr)
    return len(failed)
