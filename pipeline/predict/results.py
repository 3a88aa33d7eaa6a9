"""The results file of a batch: its format (CSV or JSONL), its columns, and its atomic write."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pipeline.errors import ConfigError
from stages.atomic_io import atomic_open, atomic_path

FORMATS = ("csv", "jsonl")


def pick_format(output: Path | None, fmt: str | None) -> tuple[Path, str]:
    """(results path, format): ``--format`` when given, else JSONL for a ``.jsonl``/``.json`` name, else CSV;
    the default path is ``predictions.<format>``. :class:`ConfigError` for an unknown format."""
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt is None:
        fmt = "jsonl" if output is not None and output.suffix.lower() in (".jsonl", ".json") else "csv"
    return (Path(output) if output is not None else Path(f"predictions.{fmt}")), fmt


def result_columns(classes: list[str], true_label: bool, windowed: bool) -> list[str]:
    """The results file's columns, in order: ``input, status, label, confidence, p_<class>..., n_frames,
    face_ratio, reason`` (+ ``true_label`` when any input has one, + ``windows, timeline`` in window mode)."""
    columns = [
        "input",
        "status",
        "label",
        "confidence",
        *[f"p_{c}" for c in classes],
        "n_frames",
        "face_ratio",
        "reason",
    ]
    if true_label:
        columns.append("true_label")
    if windowed:
        columns += ["windows", "timeline"]
    return columns


def _jsonable(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_results(rows: list[dict], columns: list[str], path: Path, fmt: str) -> Path:
    """Write result rows (atomically: temp file + rename) as CSV or JSONL with ``columns`` in order; missing
    values are empty cells (CSV) or null (JSONL)."""
    if fmt == "csv":
        with atomic_path(path) as tmp:
            pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)
    else:
        with atomic_open(path, "w") as fh:
            for row in rows:
                fh.write(json.dumps({c: _jsonable(row.get(c)) for c in columns}) + "\n")
    return path
