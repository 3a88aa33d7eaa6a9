"""The driver of `seqfer evaluate MODEL ROOT --format F [--split S] -o OUT`: a model scored on a labelled dataset.

- MODEL: whatever `seqfer predict` accepts (a model folder, a CV run folder, an OUTPUT_DIR).
- ROOT + ``--format``: any dataset `seqfer manifest` reads, scanned without folds (any number of subjects), with
  the same scanner options (``--labels``, ``--pattern``, ``--classes``, ``--include-neutral``, Oulu's options).
  By default every canonical class is read from the data. ``--split S`` keeps the sequences of the dataset's
  own split ``S``; for a dataset without a split of its own it is an error.
- Classes: the model's and the data's class names are matched through the aliases (``angry`` = anger, ``sad`` =
  sadness, ...; :func:`data_manifests.scan_common.canonical_class`). A labelled sequence of a class the model
  lacks is excluded (not predicted) and counted per class; unlabelled sequences are not predicted and counted
  per reason. The *scored classes* are the model's classes that the data holds.
- Prediction is `seqfer predict`'s (:func:`pipeline.predict.run.run_predict`) on OUT/manifest.parquet, the
  sequences to score: on Ray for many sequences, with its progress bar, and resumable: its rows go to
  OUT/predict.jsonl and its journal, so a killed evaluate run again with the same arguments reuses the
  finished sequences. A sequence that fails (no face, unreadable...) is reported with its status and reason
  and not scored, except as a wrong answer in ``accuracy_all``.
- OUT (a folder of kind ``evaluate``; a foreign folder is refused before any work):
  ``metrics.json`` (``accuracy``, ``mean_class_accuracy`` (unweighted recall over the scored classes),
  ``macro_f1``, ``accuracy_shared`` / ``mean_class_accuracy_shared`` / ``macro_f1_shared`` (the prediction
  restricted, by argmax, to the scored classes: the usual cross-dataset protocol when the model knows classes the
  data lacks), ``accuracy_all`` / ``accuracy_shared_all`` (over every sequence to score, a failed one counted
  wrong, as published figures count every test image), ``n_scored``, ``classes``, ``per_class`` (n, recall as
  ``accuracy``, precision, F1), ``excluded_classes``, ``n_failed`` and ``failed`` per status, ``n_unlabelled``,
  ``model``, ``data``), ``predictions.csv`` (``sequence_id, subject, label, pred, pred_shared, status, reason,
  p_<class>...`` per predicted sequence), ``confusion.csv`` (rows: scored classes, columns: model classes) and
  ``confusion.png``.
- Exit code (CLI): 0 when at least one sequence was scored, 1 when every one failed (as `seqfer preprocess`,
  not `seqfer predict`: a few faceless images in a dataset are counted in metrics.json, not a failed run).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path

from data_manifests.scan import scan
from data_manifests.schema import ManifestMeta, write_manifest
from pipeline.evaluate.data import EvalData, match_classes, scan_dataset, select_split
from pipeline.evaluate.metrics import prediction_table, score
from pipeline.evaluate.report import metrics_dict, summary_lines, write_outputs
from pipeline.model_folder.load import ModelBundle, load_model_bundle
from pipeline.predict.run import run_predict
from pipeline.runtime.output_folder import check_replaceable, claim_folder

__all__ = ["FOLDER_KIND", "MANIFEST_FILE", "PREDICT_FILE", "run_evaluate"]

log = logging.getLogger(__name__)

FOLDER_KIND = "evaluate"
MANIFEST_FILE = "manifest.parquet"
PREDICT_FILE = "predict.jsonl"
"""`seqfer predict`'s results file in OUT; its resume journal lies beside it."""


def _read_results(path: Path) -> dict[str, dict]:
    """sequence_id -> `seqfer predict`'s result row, from its JSONL results file."""
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {row["input"]: row for row in rows}


def _load_data(root: Path, fmt: str, split: str | None, bundle: ModelBundle, scan_options: dict) -> EvalData:
    """Scan, keep the split, match the classes; logs the scan report once they succeeded (a user error is then
    one ``error:`` line)."""
    df, report = scan_dataset(root, fmt, only_split=split, **scan_options)  # other split folders left unread
    where = f"{report.root or root} (--format {fmt})"
    data = match_classes(select_split(df, split, where), bundle.classes, where)
    log.info(report.summary(df))
    return data


def _source(root: Path, fmt: str, split: str | None, scan_options: dict) -> dict:
    """metrics.json's ``data``: the root, format, split and the scanner options given other than their
    defaults (so the Python API and the CLI, which passes every option, record the same)."""
    defaults = {k: p.default for k, p in inspect.signature(scan).parameters.items()}
    options = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in scan_options.items()
        if v is not None and v != defaults.get(k)
    }
    return {"root": str(Path(root).absolute()), "format": fmt, "split": split, **options}


def run_evaluate(
    model: Path | str,
    root: Path | str,
    fmt: str,
    output: Path | str,
    *,
    split: str | None = None,
    overrides: list[str] | None = None,
    cache_dir: Path | None = None,
    **scan_options: object,
) -> dict:
    """Score ``model`` on the labelled sequences of ``root`` (format ``fmt``) and write the folder ``output``
    (see the module doc); returns metrics.json's content.

    ``scan_options``: the scanner options of `seqfer manifest` (``labels_csv``, ``classes`` (default: every
    canonical class), ``include_neutral``, ``oulu_system``, ``oulu_illumination``, ``name_pattern``), passed
    to :func:`data_manifests.scan.scan`. ``overrides`` / ``cache_dir``: as for `seqfer predict`.
    Raises :class:`~stages.errors.StageError` for a foreign ``output`` folder or a bad model,
    :class:`~data_manifests.errors.ManifestError` for a bad dataset, a missing split or nothing to score,
    all before any prediction.
    """
    start = time.perf_counter()
    out = Path(output)
    check_replaceable(out, FOLDER_KIND)  # a refusal costs nothing; the folder is claimed once the data is read
    overrides = list(overrides or [])
    bundle = load_model_bundle(model, overrides)
    root = Path(root)
    data = _load_data(root, fmt, split, bundle, scan_options)
    claim_folder(out, FOLDER_KIND)
    meta = ManifestMeta(
        classes=data.scored_classes, n_folds=0, fold_source="none", extra=_source(root, fmt, split, scan_options)
    )
    write_manifest(data.rows, out / MANIFEST_FILE, meta)
    log.info(
        f"evaluate: {len(data.rows)} sequence(s) of {', '.join(data.scored_classes)} to score"
        + (f"; excluded (the model lacks the class): {sum(data.excluded.values())}" if data.excluded else "")
    )
    run_predict(
        model,
        [str(out / MANIFEST_FILE)],
        output=out / PREDICT_FILE,
        fmt="jsonl",
        overrides=overrides,
        cache_dir=cache_dir,
    )
    table = prediction_table(data.rows, _read_results(out / PREDICT_FILE), bundle.classes, data.scored_classes)
    scores = score(table, bundle.classes, data.scored_classes)
    model_info = {
        "path": str(bundle.path),
        "kind": bundle.kind,
        "fingerprint": bundle.fingerprint,
        "classes": bundle.classes,
    }
    metrics = metrics_dict(
        scores, data, table, model_info, _source(root, fmt, split, scan_options), time.perf_counter() - start
    )
    write_outputs(out, metrics, scores, table, bundle.classes)
    for line in summary_lines(metrics, out):
        log.info(line)
    return metrics
