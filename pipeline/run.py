"""`seqfer run`: the whole pipeline from nothing to a cross-validated model and its report."""

from __future__ import annotations

from pipeline.config import Config
from pipeline.cv.run import run_cv
from pipeline.data.labelled import load_labelled_data


def run_all(cfg: Config) -> dict:
    """(Generate demo data), build the manifest, preprocess (resumable), cross-validate; returns summary.json."""
    return run_cv(cfg, load_labelled_data(cfg, preprocess=True, refuse_split="cv"))
