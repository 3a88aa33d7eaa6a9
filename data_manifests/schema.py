"""The manifest: one row per sequence, stored as Parquet (CSV on request).

Columns (types as pandas dtypes; ``*`` may be null):

=================  ==========  ===========================================================================
column             dtype       meaning
=================  ==========  ===========================================================================
sequence_id        str         unique id, e.g. ``S005_001`` (CK+), ``VL_Strong_P001_Anger`` (Oulu)
dataset            str         ``ckplus`` | ``oulu`` | ``folder`` | ``imagefolder`` | ``fer2013`` | ``jaffe`` |
                               ``kdef`` | ``demo``
subject            str         subject id; folds never split a subject (FER2013: the image id, each image
                               its own subject, since the dataset names no people)
label*             str         canonical class name (see :data:`CLASS_SETS`); null when unlabelled
labelled           bool        False when the sequence has no usable label (kept, flagged)
label_note*        str         why a sequence is unlabelled (``no emotion file``, ``unreadable label``...)
fold*              Int64       0-based fold index; null when unlabelled
n_frames           int64       number of frames; 0 for a video (unknown until decoded)
source_type        str         ``frames`` | ``video``
video_path*        str         absolute path of the video file (``source_type == 'video'``)
frame_paths        list[str]   absolute paths of the frames, in temporal order (empty for a video)
landmark_paths*    list[str]   the dataset's own per-frame landmark files, aligned with frame_paths ('' where
                               a frame has none); null when the dataset ships none
peak_index*        Int64       0-based index of the peak (labelled) frame; CK+/Oulu: the last frame;
                               null for videos (the last frame)
condition*         str         capture condition, e.g. ``VL/Strong`` for Oulu, the view (``S``, ``HL``...)
                               for KDEF; null otherwise
split*             str         the dataset's own split: ``train`` | ``val`` | ``test`` (FER2013's Training /
                               PublicTest / PrivateTest); null for a dataset without one. A manifest with a
                               split has no CV folds (``fold`` null everywhere, ``fold_source`` ``split``):
                               it is trained on ``train``, its epoch chosen on ``val``, ``test`` scored once
=================  ==========  ===========================================================================

Parquet key-value metadata ``seqfer`` holds a JSON object with ``version``, ``classes`` (ordered class list),
``n_folds``, ``fold_seed`` and ``fold_source`` (``stratified-group``, the fold file's path, ``split`` for a
dataset with its own split (``n_folds`` 0) or ``none`` for one without labels).

Versions: 2 added the ``split`` column. A version-1 manifest (no ``split``) reads as it is, with ``split`` null
(:func:`normalise` fills every optional column that is absent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_manifests.errors import ManifestError
from stages.atomic_io import atomic_path

if TYPE_CHECKING:  # imported where a manifest is built, written or read: the schema's names alone (what a
    import pandas as pd  # prediction worker needs of this module) cost no pandas and pyarrow (~0.35 s)

SCHEMA_VERSION = 2

ONSET_TO_PEAK = frozenset({"ckplus", "oulu", "demo"})
"""Datasets whose sequences run from a neutral face to the labelled peak at their end: a row's label belongs to its
peak frame, also for a video row, whose ``peak_index`` (its last frame) is unknown until decoded."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The values of the ``split`` column, in the order a run uses them."""

# Canonical class names, in CK+ code order (0 neutral ... 7 surprise).
CKPLUS_CODES: dict[int, str] = {
    0: "neutral",
    1: "anger",
    2: "contempt",
    3: "disgust",
    4: "fear",
    5: "happy",
    6: "sadness",
    7: "surprise",
}

CLASS_SETS: dict[str, list[str]] = {
    "ckplus7": ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"],
    "basic6": ["anger", "disgust", "fear", "happy", "sadness", "surprise"],
    # FER2013's codes 0-6 in order; also JAFFE's and KDEF's seven expressions.
    "basic7": ["anger", "disgust", "fear", "happy", "sadness", "surprise", "neutral"],
    "ckplus8": ["neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"],
}

COLUMNS: list[str] = [
    "sequence_id",
    "dataset",
    "subject",
    "label",
    "labelled",
    "label_note",
    "fold",
    "n_frames",
    "source_type",
    "video_path",
    "frame_paths",
    "landmark_paths",
    "peak_index",
    "condition",
    "split",
]

LIST_COLUMNS = ("frame_paths", "landmark_paths")
TEXT_COLUMNS = (
    "sequence_id",
    "dataset",
    "subject",
    "label",
    "label_note",
    "source_type",
    "video_path",
    "condition",
    "split",
)


@dataclass
class ManifestMeta:
    """Manifest-wide facts stored in the Parquet metadata."""

    classes: list[str]
    n_folds: int = 10
    fold_seed: int = 0
    fold_source: str = "stratified-group"
    version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "classes": self.classes,
                "n_folds": self.n_folds,
                "fold_seed": self.fold_seed,
                "fold_source": self.fold_source,
                "extra": self.extra,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ManifestMeta:
        d = json.loads(text)
        return cls(
            classes=list(d["classes"]),
            n_folds=int(d.get("n_folds", 10)),
            fold_seed=int(d.get("fold_seed", 0)),
            fold_source=str(d.get("fold_source", "stratified-group")),
            version=int(d.get("version", SCHEMA_VERSION)),
            extra=dict(d.get("extra", {})),
        )


def empty_manifest() -> pd.DataFrame:
    """A manifest with the schema's columns and no rows."""
    import pandas as pd

    return normalise(pd.DataFrame({c: [] for c in COLUMNS}))


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Order the columns, fill optional ones and set dtypes; raise :class:`ManifestError` on a missing one."""
    import pandas as pd
    import pyarrow as pa

    required = ["sequence_id", "dataset", "subject", "n_frames", "source_type", "frame_paths"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest is missing required columns: {', '.join(missing)}")
    df = df.copy()
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    if df["labelled"].isna().any():
        df["labelled"] = df["labelled"].where(df["labelled"].notna(), df["label"].notna())
    df = df[COLUMNS]
    df["sequence_id"] = df["sequence_id"].astype(str)
    df["subject"] = df["subject"].astype(str)
    df["labelled"] = df["labelled"].astype(bool)
    df["fold"] = pd.array(df["fold"], dtype="Int64")
    df["peak_index"] = pd.array(df["peak_index"], dtype="Int64")
    df["n_frames"] = df["n_frames"].astype("int64")
    df["frame_paths"] = [list(p) if p is not None else [] for p in df["frame_paths"]]
    for c in TEXT_COLUMNS:
        # The dtype a Parquet read gives back (pandas 3: str with NaN; pandas 2: object with None), so a
        # manifest compares equal before and after a round trip. Test missing values with isna().
        values = [None if is_missing(v) else str(v) for v in df[c].tolist()]  # tolist: 20x faster than iterating
        df[c] = pa.array(values, type=pa.string()).to_pandas().set_axis(df.index)
    bad_split = df["split"].notna() & ~df["split"].isin(SPLITS)
    if bad_split.any():
        raise ManifestError(
            f"manifest split values must be {', '.join(SPLITS)} or empty; found: "
            f"{', '.join(sorted(set(df.loc[bad_split, 'split'])))[:200]}"
        )
    dup = df["sequence_id"][df["sequence_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"duplicate sequence_id in manifest: {', '.join(dup.unique()[:5])}")
    return df.reset_index(drop=True)


def is_missing(value: object) -> bool:
    """Whether one manifest cell is missing: ``pd.isna`` of a scalar (None, NaN, NaT, ``pd.NA``), without its cost
    (nor a pandas import) for the common str and int cells."""
    if value is None:
        return True
    if type(value) in (str, int):
        return False
    if type(value) is float:
        return value != value  # NaN
    import pandas as pd

    return bool(pd.isna(value))


def write_manifest(df: pd.DataFrame, path: Path, meta: ManifestMeta, csv: bool = False) -> Path:
    """Write the manifest atomically as Parquet (and a CSV copy beside it when ``csv``). Returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = normalise(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), b"seqfer": meta.to_json().encode()}
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    if csv:
        out = df.copy()
        for c in LIST_COLUMNS:
            out[c] = [json.dumps(list(v)) if v is not None else "" for v in out[c]]
        csv_path = path.with_suffix(".csv")
        with atomic_path(csv_path) as tmp:
            out.to_csv(tmp, index=False)
    return path


def read_manifest(path: Path) -> tuple[pd.DataFrame, ManifestMeta]:
    """Read a manifest written by :func:`write_manifest`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ManifestError(f"{path}: not a readable Parquet manifest ({exc})") from exc
    raw = (table.schema.metadata or {}).get(b"seqfer")
    if raw is None:
        raise ManifestError(f"{path}: Parquet file has no seqfer manifest metadata")
    df = table.to_pandas()
    for c in LIST_COLUMNS:
        df[c] = [list(v) if v is not None else None for v in df[c]]
    return normalise(df), ManifestMeta.from_json(raw.decode())
