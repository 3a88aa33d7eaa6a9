"""A run's config and manifest rows in the stages' terms: a config's SequenceConfig, a row's SequenceSource."""

from __future__ import annotations

import pandas as pd

from pipeline.config import Config
from stages.preprocess.decode import SequenceSource
from stages.preprocess.sequence import SequenceConfig


def sequence_config(cfg: Config) -> SequenceConfig:
    """The stage settings of ``cfg.preprocess`` alone (what the cache keys depend on), output locations dropped.

    The one place a config becomes a :class:`SequenceConfig`: preprocessing, training data, CV keys and the
    model folder's recorded preprocessing all call it."""
    return SequenceConfig.model_validate(cfg.preprocess.model_dump(include=set(SequenceConfig.model_fields)))


def source_from_row(row: pd.Series | dict) -> SequenceSource:
    """A manifest row -> the decode stage's source description."""
    get = row.get
    return SequenceSource(
        sequence_id=str(get("sequence_id")),
        frame_paths=tuple(get("frame_paths") or ()),
        video_path=None if pd.isna(get("video_path")) else str(get("video_path")),
        peak_index=None if pd.isna(get("peak_index")) else int(get("peak_index")),
        landmark_paths=tuple(get("landmark_paths") or ()),
    )
