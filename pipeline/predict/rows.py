"""Inputs predicted into their result rows, with their side files (timeline CSV and PNG, key-frame picture)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.predict.inputs import PredictInput
from pipeline.predict.prediction import PredictionResult
from pipeline.predict.predictor import Predictor
from stages.atomic_io import atomic_path


@dataclass(frozen=True)
class PredictOptions:
    """Per-input options of a batch: window/stride (s), where timelines and pictures go (None = not wanted)."""

    window: float | None = None
    stride: float | None = None
    timeline_dir: str | None = None
    visualize_dir: str | None = None


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


def predict_row(predictor: Predictor, pin: PredictInput, out_name: str, opts: PredictOptions) -> dict:
    """Predict one input and write its side files (timeline CSV/PNG, picture); returns its result row.

    Never raises for a bad input: a failure to draw is noted in ``reason`` and the prediction is kept.
    """
    result = predictor.predict(pin, window=opts.window, stride=opts.stride, keep=opts.visualize_dir is not None)
    return result_row(predictor, result, out_name, opts)


def predict_rows(predictor: Predictor, chunk: Sequence[tuple[PredictInput, str]], opts: PredictOptions) -> list[dict]:
    """:func:`predict_row` of every (input, side-file stem) of ``chunk``, in order. Without ``--window`` the
    chunk goes through :meth:`Predictor.predict_batch` (one network call, the same probabilities)."""
    if opts.window is not None:
        return [predict_row(predictor, pin, name, opts) for pin, name in chunk]
    results = predictor.predict_batch([pin for pin, _ in chunk], keep=opts.visualize_dir is not None)
    return [result_row(predictor, result, name, opts) for result, (_, name) in zip(results, chunk, strict=True)]


def result_row(predictor: Predictor, result: PredictionResult, out_name: str, opts: PredictOptions) -> dict:
    """``result``'s row, after writing its side files: with ``--window`` the timeline CSV and PNG (``windows`` and
    ``timeline`` columns), with ``--visualize`` the picture. A failure to draw is noted in ``reason``.
    The drawing module (pandas, matplotlib) is imported only when a side file is asked for."""
    row = result.row(predictor.classes)
    notes = []
    if opts.window is not None:
        row["windows"] = 0 if result.timeline is None else len(result.timeline)
        row["timeline"] = ""
        if result.timeline is not None and len(result.timeline):
            csv_path = Path(opts.timeline_dir) / f"{out_name}.csv"
            with atomic_path(csv_path) as tmp:
                result.timeline.to_csv(tmp, index=False)
            row["timeline"] = str(csv_path)
            try:
                from pipeline.predict.visualize import save_timeline_png

                save_timeline_png(
                    result.timeline,
                    predictor.classes,
                    csv_path.with_suffix(".png"),
                    title=f"{result.input}: probabilities per {opts.window:g} s window",
                )
            except Exception as exc:  # a picture must never cost the prediction
                notes.append(f"timeline plot failed: {type(exc).__name__}: {exc}")
    if opts.visualize_dir is not None:
        try:
            from pipeline.predict.visualize import save_prediction_picture

            save_prediction_picture(
                result,
                predictor.classes,
                Path(opts.visualize_dir) / f"{out_name}.png",
                fps=predictor.sequence_config.frames.fps,
                max_pixels=predictor.sequence_config.frames.max_pixels,
            )
        except Exception as exc:
            notes.append(f"picture failed: {type(exc).__name__}: {exc}")
    if notes:
        row["reason"] = "; ".join([row["reason"], *notes]) if row["reason"] else "; ".join(notes)
    return row
