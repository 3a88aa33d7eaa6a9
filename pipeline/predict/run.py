"""The batch driver of `seqfer predict MODEL INPUT... [-o OUT] [--format csv|jsonl] [--window S] [--visualize DIR]`.

- MODEL: a model folder (`seqfer train`), a CV run folder (its fold models are ensembled) or an OUTPUT_DIR.
- INPUT: videos, frame folders, images, globs, manifests, .txt lists (see :mod:`pipeline.predict.inputs`).
- Results: one row per input, written to ``-o`` (default ``predictions.csv``, or ``predictions.jsonl`` with
  ``--format jsonl``; a ``.jsonl`` output name picks JSONL by itself): ``input, status, label, confidence,
  p_<class>..., n_frames, face_ratio, reason`` (+ ``true_label`` for manifest inputs, + ``windows, timeline``
  with ``--window``). Rows keep the order of the inputs. Missing values are empty cells (CSV) or null (JSONL)
  (:mod:`pipeline.predict.results`).
- ``--window S``: sliding windows of S seconds (stride S/2 unless ``--stride``); per input a timeline CSV and
  PNG in ``<OUT stem>_timelines/``; the row's probabilities are the mean over windows with a usable face
  (:mod:`pipeline.predict.rows`).
- ``--visualize DIR``: a key-frame picture per input (:mod:`pipeline.predict.visualize`).
- Many inputs run on Ray (``ray.workers`` actors, each holding one :class:`Predictor`; ``--set
  ray.workers=N``; :mod:`pipeline.predict.on_ray`), fewer than ``RAY_MIN_INPUTS`` in this process. A progress
  bar shows rate and ETA; a summary (done / resumed / failed with reasons) ends the run.
- Single images are predicted in chunks (up to :data:`~pipeline.predict.chunks.CHUNK_MAX` per worker call, one
  network call per chunk, the same probabilities as one by one; :mod:`pipeline.predict.chunks`).
- Resume: every finished chunk's rows are appended to ``<OUT>.resume.jsonl`` at once; a re-run with the same model,
  inputs (same files, sizes, mtimes) and options reuses those rows instead of recomputing (rows with status
  ``error`` or ``timeout`` are retried; :mod:`pipeline.predict.resume`). Delete that file to recompute everything.
- Exit code (CLI): 0 when every input is ok, 1 when any is not (the summary says which and why).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.model_folder.load import ModelBundle, load_model_bundle
from pipeline.predict.chunks import Todo, make_chunks
from pipeline.predict.inputs import PredictInput, resolve_inputs
from pipeline.predict.on_ray import run_on_ray
from pipeline.predict.predictor import Predictor
from pipeline.predict.results import pick_format, result_columns, write_results
from pipeline.predict.resume import input_key, journal_path, load_resume, resume_journal
from pipeline.predict.rows import PredictOptions, output_names, predict_rows
from pipeline.runtime.folder_lock import hold_output
from pipeline.runtime.output_folder import claim_folder
from pipeline.runtime.progress import RunSummary, progress_bar
from stages.atomic_io import name_problem, sibling_name
from stages.errors import StageError
from stages.record import SequenceStatus

__all__ = ["RAY_MIN_INPUTS", "run_predict"]

log = logging.getLogger(__name__)

RAY_MIN_INPUTS = 4
"""Batches smaller than this run in the calling process: starting Ray and its workers costs seconds."""


def _check_seconds(window: float | None, stride: float | None) -> None:
    for name, value in (("--window", window), ("--stride", stride)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} {value}: must be a positive number of seconds")


def _resolve(inputs: list[str]) -> list[PredictInput]:
    """Every INPUT expanded (:func:`~pipeline.predict.inputs.resolve_inputs`); says which were given twice."""
    duplicates: list[str] = []
    pins = resolve_inputs(inputs, duplicates)
    if duplicates:
        log.info(
            f"predict: note: {len(duplicates)} input(s) given more than once, predicted once: "
            + ", ".join(sorted(set(duplicates))[:5])
            + (" ..." if len(set(duplicates)) > 5 else "")
        )
    return pins


def _options(output: Path, window: float | None, stride: float | None, visualize: Path | None) -> PredictOptions:
    """The per-input options (stride defaults to window / 2); claims the timeline and picture folders."""
    timelines = output.absolute().with_name(sibling_name(output.stem, "_timelines"))
    opts = PredictOptions(
        window=window,
        stride=None if window is None else (stride if stride is not None else window / 2),
        timeline_dir=None if window is None else str(timelines),
        visualize_dir=None if visualize is None else str(Path(visualize).absolute()),
    )
    for folder, kind in ((opts.timeline_dir, "timelines"), (opts.visualize_dir, "pictures")):
        if folder is not None:
            claim_folder(folder, kind)
    return opts


def _predict_todo(
    bundle: ModelBundle,
    todo: list[Todo],
    rows: dict[str, dict],
    record: Callable[[list[tuple[str, dict]]], None],
    overrides: list[str],
    cache: str | None,
    opts: PredictOptions,
) -> None:
    """Predict ``todo`` into ``rows`` chunk by chunk (:mod:`pipeline.predict.chunks`), journalling each chunk's
    rows as it comes: on Ray for :data:`RAY_MIN_INPUTS` inputs or more (or a Ray cluster address), else in this
    process."""
    bar = progress_bar(len(todo), "predict", unit="input")
    n_failed = 0
    try:
        if len(todo) >= RAY_MIN_INPUTS or bundle.config.ray.address:
            chunks = make_chunks(todo, bundle.config.ray.workers, opts)
            results = run_on_ray(bundle, overrides, cache, opts, chunks)
        else:
            results = _in_process(Predictor(bundle, cache_dir=cache), make_chunks(todo, 1, opts), opts)
        for pairs in results:
            rows.update(pairs)
            record(pairs)
            bar.update(len(pairs))
            failed = sum(row["status"] != SequenceStatus.OK for _key, row in pairs)
            if failed:
                n_failed += failed
                bar.set_postfix_str(f"failed {n_failed}")
    finally:
        bar.close()


def _in_process(
    predictor: Predictor, chunks: list[list[Todo]], opts: PredictOptions
) -> Iterator[list[tuple[str, dict]]]:
    """Each chunk's (resume key, row) pairs, predicted in this process."""
    for chunk in chunks:
        rows = predict_rows(predictor, [(pin, name) for pin, name, _key in chunk], opts)
        yield [(key, row) for (_pin, _name, key), row in zip(chunk, rows, strict=True)]


def _summary(ordered: list[dict], resumed_ok: int, output: Path, start: float) -> RunSummary:
    """done / resumed / failed (with reasons), the predicted labels' counts and the results file."""
    failed = [(r["input"], f"{r['status']}: {r['reason']}") for r in ordered if r["status"] != SequenceStatus.OK]
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
    return summary


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
    output, fmt = pick_format(output, fmt)
    if name_problem(output):  # before any work: a name the file system refuses would fail only at the end
        raise StageError(f"-o {name_problem(output)}")
    if output.is_dir():
        raise StageError(f"-o {output}: is a folder; give a file name for the results, e.g. {output}/predictions.{fmt}")
    _check_seconds(window, stride)
    with hold_output(output):  # a second run writing the same results file gets an error line at once
        return _predict_into(bundle, inputs, output, fmt, window, stride, visualize, overrides, cache_dir, start)


def _predict_into(
    bundle: ModelBundle,
    inputs: list[str],
    output: Path,
    fmt: str,
    window: float | None,
    stride: float | None,
    visualize: Path | None,
    overrides: list[str],
    cache_dir: Path | None,
    start: float,
) -> int:
    """The body of :func:`run_predict` once the results file is held: inputs, resume, prediction, results."""
    pins = _resolve(inputs)
    log.info(f"predict: {len(pins)} input(s) with {bundle.describe()}")
    names = output_names([p.name for p in pins])
    opts = _options(output, window, stride, visualize)
    bundle_id = bundle.fingerprint
    keys = [input_key(bundle_id, p, opts) for p in pins]
    resume_path = journal_path(output)
    done = load_resume(resume_path)
    rows: dict[str, dict] = {k: done[k] for k in keys if k in done}
    todo = [(p, n, k) for p, n, k in zip(pins, names, keys, strict=True) if k not in rows]
    if rows:
        log.info(f"predict: {len(rows)} input(s) already done in {resume_path}, not recomputed")

    cache = None if cache_dir is None else str(Path(cache_dir).absolute())
    with resume_journal(resume_path) as record:
        _predict_todo(bundle, todo, rows, record, overrides, cache, opts)

    ordered = [rows[k] for k in keys]
    columns = result_columns(bundle.classes, any(p.true_label is not None for p in pins), window is not None)
    write_results(ordered, columns, output, fmt)
    resumed_ok = sum(done[k]["status"] == SequenceStatus.OK for k in keys if k in done)
    summary = _summary(ordered, resumed_ok, output, start)
    log.info(summary.text())
    return len(summary.failed)
