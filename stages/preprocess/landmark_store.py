"""A folder of landmark tables, many sequences to a Parquet file: write a batch's tables as one part, find and read
one sequence's rows, drop the rows a newer part replaced.

Layout: ``FOLDER/part-RRRRRR-BBBBBB.parquet``, run ``R`` (one more than the folder's last) and batch ``B`` of that
run, each holding the :mod:`~stages.preprocess.landmark_table` columns of its sequences (one row per frame, in
frame order, sequence after sequence). Its Parquet metadata maps each sequence id to the landmarks cache key the
rows came from (:data:`KEYS_METADATA`), so a reader learns which sequences a part holds without reading its rows,
and a run knows whether a table is current. Parts are written atomically; a later part replaces the rows of the
sequences it holds in every earlier part (name order is creation order), and :meth:`LandmarkTables.drop_stale`
rewrites the earlier parts without them once a run is over, so a finished folder holds each sequence once and
``pd.read_parquet(FOLDER, filters=[("sequence_id", "==", sid)])`` reads a sequence as well as
:meth:`LandmarkTables.read` does. CSV copies, when asked for, go to a folder of their own (``part-...csv``), so
that the Parquet folder stays a dataset Parquet readers open as a whole.

Folders written before parts existed hold one ``<sequence_id>.parquet`` per sequence; :meth:`LandmarkTables.read`
still reads those, and :meth:`LandmarkTables.drop_stale` removes each once its sequence is in a part.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.face_geometry import N_POINTS
from stages.preprocess.landmark_table import COLUMNS, apply_dtypes, arrow_table, landmark_columns
from stages.record import LandmarkArrays

if TYPE_CHECKING:  # a worker writes parts straight from arrays: pandas only where a DataFrame is read or a CSV
    import pandas as pd  # copy is asked for

log = logging.getLogger(__name__)

KEYS_METADATA = b"seqfer.landmark_keys"
"""Parquet metadata key of a part: JSON ``{sequence_id: landmarks cache key}`` of the sequences it holds."""
PART_RE = re.compile(r"part-(\d{6,})-(\d{6,})\.parquet")


@dataclass(frozen=True)
class SequenceTable:
    """One sequence's table for a part: its id, the landmarks cache key it came from, its per-frame landmarks."""

    sequence_id: str
    key: str
    landmarks: LandmarkArrays


def part_name(run: int, batch: int) -> str:
    """``part-RRRRRR-BBBBBB.parquet``: sorts in creation order (runs, then batches of a run)."""
    return f"part-{run:06d}-{batch:06d}.parquet"


def part_columns(tables: list[SequenceTable]) -> dict[str, np.ndarray]:
    """The :func:`~stages.preprocess.landmark_table.landmark_columns` of ``tables``, sequence after sequence, from
    one call over their joined arrays (not a call per sequence: ~0.1 ms an item less for one-image items)."""
    lms = [t.landmarks for t in tables]
    ids = np.repeat(np.array([t.sequence_id for t in tables], dtype=object), [len(lm.frame_indices) for lm in lms])

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(lm, name) for lm in lms])

    points = np.concatenate([lm.landmarks if lm.landmarks.size else lm.landmarks.reshape(0, N_POINTS, 2) for lm in lms])
    return landmark_columns(
        ids, joined("frame_indices"), joined("timestamps"), joined("confidence"), joined("success"), points
    )


def write_part(folder: Path, name: str, tables: Iterable[SequenceTable], csv_folder: Path | None = None) -> Path | None:
    """Write ``tables`` as one part ``folder/name`` (atomically), and a CSV copy ``csv_folder/<stem>.csv`` when
    ``csv_folder`` is given. Returns the part's path; None (nothing written) when ``tables`` is empty."""
    tables = list(tables)
    if not tables:
        return None
    columns = part_columns(tables)
    meta = json.dumps({t.sequence_id: t.key for t in tables}, separators=(",", ":"))
    arrow = arrow_table(columns).replace_schema_metadata({KEYS_METADATA: meta.encode("utf-8")})
    path = Path(folder) / name
    _write(arrow, path)
    if csv_folder is not None:
        import pandas as pd

        with atomic_path(Path(csv_folder) / f"{path.stem}.csv") as tmp:
            pd.DataFrame(columns).to_csv(tmp, index=False)
    return path


def _write(arrow: pa.Table, path: Path) -> None:
    # Dictionaries on every column: 68-point landmarks in whole pixels repeat (~350 bytes a row in parts of 256
    # sequences); statistics on the id only, so a reader's filter can skip parts.
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, use_dictionary=True, write_statistics=["sequence_id"])


def part_keys(path: Path) -> dict[str, str] | None:
    """``{sequence_id: landmarks key}`` of a part, from its metadata alone; None when it cannot be read."""
    try:
        meta = pq.read_schema(path).metadata or {}
        keys = json.loads(meta[KEYS_METADATA])
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        log.debug("landmark table part %s unreadable: %s", path, exc)
        return None
    return keys if isinstance(keys, dict) else None


class LandmarkTables:
    """The landmark tables under ``folder``: which sequences they hold (:meth:`scan`, read once and kept),
    one sequence's rows (:meth:`read`), the next run's number (:meth:`next_run`)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._refs: dict[str, tuple[Path, str]] | None = None

    def parts(self) -> list[Path]:
        """Every part, in creation order."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if PART_RE.fullmatch(p.name))

    def scan(self) -> dict[str, tuple[Path, str]]:
        """``{sequence_id: (part, landmarks key)}``, the newest part of each sequence; read once (:meth:`refresh`
        reads again). An unreadable part holds nothing."""
        if self._refs is None:
            refs: dict[str, tuple[Path, str]] = {}
            for part in self.parts():
                for sequence_id, key in (part_keys(part) or {}).items():
                    refs[sequence_id] = (part, key)
            self._refs = refs
        return self._refs

    def refresh(self) -> None:
        self._refs = None

    def key_of(self, sequence_id: str) -> str | None:
        """The landmarks cache key of the sequence's table, None when no part holds it."""
        ref = self.scan().get(sequence_id)
        return None if ref is None else ref[1]

    def next_run(self) -> int:
        """One more than the highest run number among the parts (1 for a folder without any)."""
        runs = [int(m.group(1)) for p in self.parts() if (m := PART_RE.fullmatch(p.name))]
        return max(runs, default=0) + 1

    def read(self, sequence_id: str) -> pd.DataFrame:
        """The sequence's table (the columns and dtypes of :func:`~stages.preprocess.landmark_table.landmark_table`,
        one row per frame). Raises :class:`StageError` when no part (nor a per-sequence file of an earlier layout)
        holds it."""
        ref = self.scan().get(sequence_id)
        if ref is None:
            legacy = self.folder / f"{sequence_id}.parquet"
            if legacy.is_file():
                from stages.preprocess.landmark_table import read_landmark_table

                return read_landmark_table(legacy)
            raise StageError(f"no landmark table of sequence {sequence_id!r} in {self.folder}")
        try:
            table = pq.read_table(ref[0], filters=[("sequence_id", "=", sequence_id)])
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise StageError(f"cannot read landmark table {ref[0]}: {exc}") from exc
        return apply_dtypes(table.to_pandas()[COLUMNS])

    def drop_stale(self, csv_folder: Path | None = None) -> int:
        """Rewrite every part holding rows that a newer part replaced without them (delete it when nothing is
        left, and unreadable parts), with their CSV copies in ``csv_folder``; delete the per-sequence files of an
        earlier layout whose sequence a part now holds. Returns how many files were rewritten or deleted."""
        parts = self.parts()
        held = {part: part_keys(part) for part in parts}
        newest = {sid: part for part in parts for sid in (held[part] or {})}
        changed = 0
        for part in parts:
            keys = held[part]
            stale = None if keys is None else {sid for sid in keys if newest[sid] != part}
            if stale is not None and not stale:
                continue
            keep = {} if keys is None else {sid: key for sid, key in keys.items() if sid not in stale}
            self._rewrite(part, keep, csv_folder)
            changed += 1
        changed += self._drop_legacy(set(newest))
        self.refresh()
        return changed

    def _rewrite(self, part: Path, keep: dict[str, str], csv_folder: Path | None) -> None:
        """``part`` with the rows of the sequences in ``keep`` only (deleted when ``keep`` is empty)."""
        csv = None if csv_folder is None else Path(csv_folder) / f"{part.stem}.csv"
        if not keep:
            part.unlink(missing_ok=True)
            if csv is not None:
                csv.unlink(missing_ok=True)
            return
        import pyarrow.compute as pc  # ~60 ms of import, for the driver's clean-up only

        table = pq.read_table(part)
        mask = pc.is_in(table.column("sequence_id"), value_set=pa.array(list(keep)))
        kept = table.filter(mask).replace_schema_metadata(
            {KEYS_METADATA: json.dumps(keep, separators=(",", ":")).encode("utf-8")}
        )
        _write(kept, part)
        if csv is not None and csv.is_file():
            with atomic_path(csv) as tmp:
                kept.to_pandas().to_csv(tmp, index=False)

    def _drop_legacy(self, in_parts: set[str]) -> int:
        """Delete ``<sequence_id>.parquet`` / ``.csv`` files of the per-sequence layout whose sequence is in a part."""
        entries = list(self.folder.iterdir()) if self.folder.is_dir() else []
        if all(PART_RE.fullmatch(p.name) or p.name.startswith(".") for p in entries):
            return 0
        removed = 0
        for path in [*self.folder.rglob("*.parquet"), *self.folder.rglob("*.csv")]:
            sequence_id = path.relative_to(self.folder).with_suffix("").as_posix()
            if not PART_RE.fullmatch(path.name) and sequence_id in in_parts:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
