"""Resumable on-disk cache of per-sequence arrays: content-addressed, verified on every read.

Keys: :func:`stable_hash` of everything that produced an entry (the source's fingerprint and the config of
every stage on the way), so a changed setting recomputes exactly what it affects. The chain used for
preprocessing is documented (and computed) by :func:`stage_keys`::

    landmarks  = hash("landmarks", fingerprint, frame selection, landmark config)
    aligned    = hash("aligned", landmarks key, align config)
    trajectory = hash("trajectory", aligned key, trajectory config)

Entries: one file per key at ``root/namespace/key[:2]/key.npz``, written by :mod:`stages.preprocess.cache_format`
(format 2: one compact file, image stacks as PNG, other arrays deflated where that pays, a checksum over the
decoded arrays and the caller's metadata; never pickle). The ``.npz`` suffix is kept from format 1 (``np.savez``
archives), whose entries are still read, so a cache written by an earlier version is reused as it is.

Writes: a new entry is written in place (:func:`~stages.atomic_io.write_verified`: ``O_EXCL``, no temp file and
rename, ~150 us a put against ~230 us on this project's disk: a one-image sequence writes three entries), an
existing one is replaced atomically (temp file and ``os.replace``). A process killed mid-write, or a reader that
comes while another worker writes the same key, finds a truncated entry: the read checks below reject it and it is
made again. Temp files left by a killed replacing writer are never read and are removed when their writer is gone
(same host, dead pid) or after an hour. Entries are not fsynced (~1 ms an entry): what an operating-system crash
might truncate is caught by the same checks.

Reads verify everything (the layout, each codec's checks, the checksum, every array's size). A damaged entry
(truncated file, flipped bits, missing arrays) is deleted and reported as absent, so the caller recomputes it;
``ArrayCache.stats["corrupt"]`` counts them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from stages.atomic_io import clean_stale_temps, host_tag, write_verified
from stages.errors import StageError
from stages.preprocess.cache_format import CacheEntry, canonical_json, decode_entry, encode_entry
from stages.record import SequenceRecord, SequenceStatus

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"[A-Za-z0-9_-]{2,128}")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_ARRAY_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
HASH_LENGTH = 20


# --- keys -------------------------------------------------------------------------------------------------


def stable_hash(*parts: object) -> str:
    """First 20 hex characters of the sha256 of the canonical JSON of ``parts`` (same inputs -> same key, on
    any machine and Python run)."""
    return hash_json(canonical_json(list(parts)))


def hash_json(text: str) -> str:
    """:func:`stable_hash` of parts given as their canonical JSON list text, ``[part1,part2,...]``.

    ``canonical_json([a, b])`` is exactly ``"[" + canonical_json(a) + "," + canonical_json(b) + "]"`` (no
    whitespace, keys sorted within each dict), so a part that stays the same over many keys (a stage's config) is
    serialised once and spliced: :func:`stage_keys_json`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def _file_identity(path: str | os.PathLike) -> list:
    """[absolute path, size in bytes, mtime in ns]; size and mtime are -1 for a file that cannot be stat'ed
    (the decoder reports it; a key must still be computable)."""
    p = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError:
        return [p, -1, -1]
    return [p, int(st.st_size), int(st.st_mtime_ns)]


def source_fingerprint(frame_paths: Sequence[str | os.PathLike], video_path: str | os.PathLike | None) -> dict:
    """Identity of a source's files: absolute path, size and mtime (ns) of the video and of every frame.

    Frame lists are summarised as their count and the sha256 of the per-file list, so the fingerprint stays
    small for long sequences. Editing, replacing, adding or removing a file changes it; nothing is read.
    """
    frames = [_file_identity(p) for p in frame_paths]
    digest = hashlib.sha256(canonical_json(frames).encode("utf-8")).hexdigest()
    return {
        "video": _file_identity(video_path) if video_path is not None else None,
        "frames": {"count": len(frames), "sha256": digest},
    }


def stage_keys(
    fingerprint: Mapping, frames: object, landmarks: object, align: object, trajectory: object
) -> dict[str, str]:
    """Cache keys of the three preprocessing levels, each chained on the one before it.

    ``frames`` is whatever selects the frames (the frame-selection config, plus e.g. the peak index),
    ``landmarks``/``align``/``trajectory`` the stage configs (pydantic models or plain JSON-able values).
    Changing the trajectory config changes only the trajectory key; changing align changes aligned and
    trajectory; changing the source, the frame selection or the landmark config changes all three.
    """
    return stage_keys_json(*(canonical_json(part) for part in (fingerprint, frames, landmarks, align, trajectory)))


def stage_keys_json(fingerprint: str, frames: str, landmarks: str, align: str, trajectory: str) -> dict[str, str]:
    """:func:`stage_keys` from the :func:`canonical_json` text of each part (bit-identical keys): callers that make
    many keys with one config serialise its parts once (~60 us a key saved) and pass the texts."""
    landmarks_key = hash_json(f'["landmarks",{fingerprint},{frames},{landmarks}]')
    aligned_key = hash_json(f'["aligned","{landmarks_key}",{align}]')  # keys are hex: nothing to escape
    trajectory_key = hash_json(f'["trajectory","{aligned_key}",{trajectory}]')
    return {"landmarks": landmarks_key, "aligned": aligned_key, "trajectory": trajectory_key}


# --- the cache --------------------------------------------------------------------------------------------


def _host() -> str:
    return host_tag()


class ArrayCache:
    """Arrays by key under ``root/namespace/`` (e.g. ``cache/landmarks/``). Safe to share between processes.

    ``stats`` counts, for this instance: ``hits``, ``misses``, ``corrupt`` (entries found damaged and
    deleted), ``puts`` and ``temp_cleaned``.
    """

    def __init__(self, root: Path | str, namespace: str, stale_temp_seconds: float = 3600.0) -> None:
        if not _NAME_RE.fullmatch(namespace):
            raise ValueError(f"cache namespace must be letters, digits, '-' or '_': {namespace!r}")
        self.root = Path(root)
        self.namespace = namespace
        self.dir = self.root / namespace
        self._dir = str(self.dir)
        self.stale_temp_seconds = stale_temp_seconds
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0, "puts": 0, "temp_cleaned": 0}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StageError(f"cannot create cache folder {self.dir}: {exc.strerror or exc}") from exc
        self.clean_temp()

    # paths
    def path(self, key: str) -> Path:
        """``root/namespace/key[:2]/key.npz``."""
        return Path(self._path(key))

    def _path(self, key: str) -> str:
        """:meth:`path` as a str (no pathlib in the per-entry paths: ~10 us a call saved)."""
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"bad cache key {key!r}: 2-128 letters, digits, '-' or '_'")
        return f"{self._dir}{os.sep}{key[:2]}{os.sep}{key}.npz"

    def has(self, key: str) -> bool:
        """Whether an entry file exists (not verified; :meth:`get` verifies)."""
        return os.path.isfile(self._path(key))

    def keys(self) -> Iterator[str]:
        """Keys of the entries on disk (unverified), in no particular order."""
        for shard in self.dir.iterdir() if self.dir.is_dir() else ():
            if shard.is_dir():
                for f in shard.glob("*.npz"):
                    yield f.stem

    # reads
    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None when absent or damaged (a damaged entry is deleted)."""
        entry = self.load(key)
        return None if entry is None else entry.arrays

    def load(self, key: str) -> CacheEntry | None:
        """The entry's arrays and metadata, or None when absent or damaged (a damaged entry is deleted)."""
        path = self._path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.stats["misses"] += 1
            return None
        try:
            entry = self._read(path)
        except Exception as exc:  # any failure to read back what we wrote means the file is damaged
            self.stats["corrupt"] += 1
            self.stats["misses"] += 1
            log.warning(
                "cache entry %s is damaged (%s: %s); deleting it so it is recomputed", path, type(exc).__name__, exc
            )
            self._discard(path, st)
            return None
        self.stats["hits"] += 1
        return entry

    @staticmethod
    def _read(path: str) -> CacheEntry:
        with open(path, "rb") as fh:
            return decode_entry(fh.read())

    def _discard(self, path: str, seen: os.stat_result) -> None:
        """Delete a damaged entry unless another writer has replaced it since we looked."""
        try:
            now = os.stat(path)
            if (now.st_ino, now.st_size, now.st_mtime_ns) == (seen.st_ino, seen.st_size, seen.st_mtime_ns):
                os.unlink(path)
        except FileNotFoundError:
            pass

    # writes
    def put(self, key: str, arrays: Mapping[str, np.ndarray], meta: dict | None = None) -> Path:
        """Store ``arrays`` (numeric, bool or str numpy arrays; object arrays refused, nothing is pickled) and
        JSON-able ``meta`` under ``key``, atomically. Returns the entry's path."""
        path = self._path(key)
        data: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            if (
                not isinstance(name, str)
                or not _ARRAY_NAME_RE.fullmatch(name)
                or name.startswith("__")
                or name in ("file", "allow_pickle")  # np.savez's parameter names (format 1): still refused
            ):
                raise ValueError(f"bad array name {name!r} for cache entry {key}")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"array {name!r} has dtype object; the cache stores no pickled data")
            data[name] = arr
        content = encode_entry(data, meta or {})
        write_verified(path, content)  # verified on read: a crash or a race costs a recomputation
        self.stats["puts"] += 1
        return Path(path)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every entry of this namespace (other namespaces under ``root`` are untouched)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def clean_temp(self) -> int:
        """Delete temp files of writers that died: same host and pid gone, or older than
        ``stale_temp_seconds``. Returns how many were removed."""
        removed = 0
        for shard in self.dir.iterdir() if self.dir.is_dir() else ():
            if shard.is_dir():
                removed += clean_stale_temps(shard, self.stale_temp_seconds)
        self.stats["temp_cleaned"] += removed
        return removed


# --- records ----------------------------------------------------------------------------------------------

_RECORD_ARRAYS: dict[str, type | np.dtype] = {
    "frame_indices": np.int64,
    "timestamps": np.float64,
    "landmarks": np.float32,
    "success": np.bool_,
    "confidence": np.float32,
    "aligned": np.uint8,
    "aligned_landmarks": np.float32,
    "trajectory": np.float32,
}


def record_to_arrays(rec: SequenceRecord) -> dict[str, np.ndarray]:
    """A :class:`SequenceRecord` as plain arrays (documented dtypes; strings as 0-d str arrays, ``meta`` as
    JSON), ready for :meth:`ArrayCache.put`."""
    out = {name: np.asarray(getattr(rec, name), dtype=dtype) for name, dtype in _RECORD_ARRAYS.items()}
    out["sequence_id"] = np.array(rec.sequence_id)
    out["status"] = np.array(rec.status)
    out["detail"] = np.array(rec.detail)
    out["meta_json"] = np.array(canonical_json(rec.meta))
    return out


def record_from_arrays(d: Mapping[str, np.ndarray]) -> SequenceRecord:
    """Inverse of :func:`record_to_arrays`. Raises StageError naming the missing arrays."""
    missing = [n for n in (*_RECORD_ARRAYS, "sequence_id") if n not in d]
    if missing:
        raise StageError(f"cached record lacks arrays {missing}")
    arrays = {name: np.asarray(d[name], dtype=dtype) for name, dtype in _RECORD_ARRAYS.items()}
    return SequenceRecord(
        sequence_id=str(d["sequence_id"]),
        status=str(d["status"]) if "status" in d else SequenceStatus.OK,
        detail=str(d["detail"]) if "detail" in d else "",
        meta=json.loads(str(d["meta_json"])) if "meta_json" in d else {},
        **arrays,
    )
