"""One sequence through every stage: decode -> landmarks -> align -> trajectory, with the three-level cache.

This is the single code path from frames to a :class:`~stages.record.SequenceRecord`; preprocessing, training and
prediction all go through it. It streams: frames are decoded, landmarked and aligned one at a time, so memory is
bounded by the aligned crops of one sequence, not by the length of the video.

Cache levels (each keyed by everything that produced it, so a changed setting recomputes exactly what it
affects): ``landmarks`` (source fingerprint + frame selection + landmark config), ``aligned`` (landmarks key + align
config), ``trajectory`` (aligned key + trajectory config). A sequence whose faces are missing is cached as such at
the landmarks level, so a re-run skips it too.

The ``aligned`` level of still images smaller than their crop keeps no crop pixels; a read re-aligns them from the
source (:mod:`stages.preprocess.aligned_level`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stages.errors import StageError
from stages.face_geometry import N_POINTS
from stages.preprocess.align import AlignConfig
from stages.preprocess.aligned_level import DERIVED, align_one, keeps_crops, stack_aligned
from stages.preprocess.cache import ArrayCache
from stages.preprocess.cache_format import checksum
from stages.preprocess.decode import (
    DecodedFrame,
    FrameSelectionConfig,
    SequenceSource,
    iter_frames,
    select_indices,
    timeline,
)
from stages.preprocess.landmarks import LandmarkConfig, Landmarker, build_landmarker, warm_up_landmarker
from stages.preprocess.landmarks.base import checked
from stages.preprocess.sequence_keys import KeyMaker
from stages.preprocess.sequence_keys import sequence_keys as sequence_keys  # re-exported: callers use it from here
from stages.preprocess.sequence_status import landmark_problems, sequence_status
from stages.preprocess.trajectory import TrajectoryConfig, compute_trajectory
from stages.record import LandmarkArrays, SequenceRecord, SequenceStatus
from stages.timing import StageTimes

PROBLEMS = "landmark_problems"
"""Metadata key of a landmarks entry: the failed frames' :func:`landmark_problems`, when there are any."""


class SequenceConfig(BaseModel):
    """The settings of every stage a sequence goes through."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    frames: FrameSelectionConfig = FrameSelectionConfig()
    landmarks: LandmarkConfig = LandmarkConfig()
    align: AlignConfig = AlignConfig()
    trajectory: TrajectoryConfig = TrajectoryConfig()
    min_face_ratio: float = Field(
        0.5, ge=0.0, le=1.0, description="a sequence with a face in fewer of its kept frames than this fails"
    )
    min_frames: int = Field(1, ge=1, description="a sequence with fewer readable frames fails as too_short")


@dataclass
class SequenceOutcome:
    """What happened to one sequence. ``record`` is None when it failed."""

    sequence_id: str
    status: SequenceStatus
    reason: str = ""
    record: SequenceRecord | None = None
    cached: bool = False
    n_frames: int = 0
    face_ratio: float = 0.0
    keys: dict[str, str] = field(default_factory=dict)
    landmark_arrays: LandmarkArrays | None = None  # None when nothing could be decoded (unreadable)


def warm_up(cfg: SequenceConfig) -> None:
    """Fill the on-disk caches that each fresh worker process would otherwise fill on its first sequence, all of
    them at once: the compiled PNG and landmark kernels (numba's cache) and the converted landmark models. Run it
    once, in one process, while the workers start. It never raises: it only saves time, and whatever fails here
    fails again in the workers, which report it."""
    from stages.preprocess.png import warm_up as warm_up_png

    try:
        warm_up_png()
        warm_up_landmarker(cfg.landmarks)
    except Exception as exc:  # noqa: BLE001 - see the docstring: the workers report it
        logging.getLogger(__name__).debug("warm-up failed: %s", exc)


class SequenceProcessor:
    """Processes sequences with one landmarker (built lazily, once) and an optional cache.

    Build one per worker process: the landmarker holds dlib/torch models that are neither thread-safe nor
    picklable.

    ``times`` accumulates wall-clock seconds per stage over every call (take them with ``times.take()``):
    ``decode``, ``detect`` (detector runs, when the landmarker reports them), ``track`` (the rest of the
    landmark stage: per-frame prediction and its checks), ``align``, ``trajectory``, ``cache_read``,
    ``cache_write``.
    """

    def __init__(
        self, cfg: SequenceConfig, cache_root: Path | None = None, landmarker: Landmarker | None = None
    ) -> None:
        self.cfg = cfg
        self._landmarker = landmarker
        self.times = StageTimes()
        self._key_maker: tuple[SequenceConfig, KeyMaker] | None = None
        self.caches: dict[str, ArrayCache] | None = None
        if cache_root is not None:
            self.caches = {name: ArrayCache(Path(cache_root), name) for name in ("landmarks", "aligned", "trajectory")}

    def keys(self, source: SequenceSource) -> dict[str, str]:
        """:func:`sequence_keys` of ``source`` under this processor's config (serialised once per config object:
        assign a new ``cfg`` rather than changing its fields in place)."""
        if self._key_maker is None or self._key_maker[0] is not self.cfg:
            self._key_maker = (self.cfg, KeyMaker(self.cfg))
        return self._key_maker[1].keys(source)

    @property
    def landmarker(self) -> Landmarker:
        if self._landmarker is None:
            self._landmarker = build_landmarker(self.cfg.landmarks)
        return self._landmarker

    # -- cache helpers ---------------------------------------------------------------------------------------
    def _get(self, level: str, key: str) -> dict[str, np.ndarray] | None:
        if self.caches is None:
            return None
        with self.times.timed("cache_read"):
            return self.caches[level].get(key)

    def _get_landmarks(self, key: str) -> tuple[LandmarkArrays, str] | None:
        """The landmarks level and its :func:`landmark_problems` (kept in the entry's metadata; '' when none)."""
        if self.caches is None:
            return None
        with self.times.timed("cache_read"):
            entry = self.caches["landmarks"].load(key)
        if entry is None:
            return None
        return LandmarkArrays.from_arrays(entry.arrays), str(entry.meta.get(PROBLEMS, ""))

    def _put_landmarks(self, key: str, lm: LandmarkArrays, problems: str, meta: dict) -> None:
        self._put("landmarks", key, lm.to_arrays(), {**meta, PROBLEMS: problems} if problems else meta)

    def _put(self, level: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if self.caches is not None:
            with self.times.timed("cache_write"):
                self.caches[level].put(key, arrays, meta)

    def lookup(self, source: SequenceSource) -> SequenceOutcome | None:
        """The cached outcome of a source (with its landmarks level) when every level it needs is cached and intact,
        else None (so the caller recomputes it). Decodes nothing; every level is read and verified (a damaged entry
        is deleted)."""
        if self.caches is None:
            return None
        keys = self.keys(source)
        if not self.caches["landmarks"].has(keys["landmarks"]):
            return None
        cached = self._get_landmarks(keys["landmarks"])
        if cached is None:
            return None
        lm, problems = cached
        status, reason = sequence_status(lm.success, self.cfg, problems)
        outcome = SequenceOutcome(
            source.sequence_id,
            status,
            reason,
            cached=True,
            n_frames=len(lm.success),
            face_ratio=float(lm.success.mean()) if len(lm.success) else 0.0,
            keys=keys,
            landmark_arrays=lm,
        )
        if status != SequenceStatus.OK:
            return outcome
        if self._get("aligned", keys["aligned"]) is None or self._get("trajectory", keys["trajectory"]) is None:
            return None
        return outcome

    def load(self, source: SequenceSource) -> SequenceRecord | None:
        """The cached record of a source, or None when any level is missing or it failed."""
        if self.caches is None:
            return None
        keys = self.keys(source)
        cached = self._get_landmarks(keys["landmarks"])
        if cached is None:
            return None
        al, tr = self._get_aligned(source, keys["aligned"], cached[0]), self._get("trajectory", keys["trajectory"])
        if al is None or tr is None:
            return None
        return _record(source.sequence_id, cached[0], al, tr["trajectory"])

    # -- processing ------------------------------------------------------------------------------------------
    def process(self, source: SequenceSource, force: bool = False) -> SequenceOutcome:
        """Run (or fetch from cache) every stage for one source. Never raises for a bad input: a source that
        cannot be read, or has no face, comes back as a failed outcome with the reason."""
        try:
            return self._process(source, force)
        except StageError as exc:
            return SequenceOutcome(source.sequence_id, SequenceStatus.UNREADABLE, str(exc))

    def _process(self, source: SequenceSource, force: bool) -> SequenceOutcome:
        keys = self.keys(source)
        meta = {"sequence_id": source.sequence_id}
        cached = None if force else self._get_landmarks(keys["landmarks"])
        lm, problems = cached if cached is not None else (None, "")
        al = None if force or lm is None else self._get_aligned(source, keys["aligned"], lm)
        landmarks_cached = lm is not None
        computed = lm is None or al is None
        largest = 0  # pixels of the largest source frame aligned here (what decides whether crops are stored)
        if lm is None:
            lm, al, problems, largest = self._landmarks_and_aligned(source)
            self._put_landmarks(keys["landmarks"], lm, problems, meta)
        status, reason = sequence_status(lm.success, self.cfg, problems)
        n, ratio = len(lm.success), float(lm.success.mean()) if len(lm.success) else 0.0
        if status != SequenceStatus.OK:  # a failed sequence is fully described by its landmarks level
            return SequenceOutcome(
                source.sequence_id,
                status,
                reason,
                cached=landmarks_cached,
                n_frames=n,
                face_ratio=ratio,
                keys=keys,
                landmark_arrays=lm,
            )
        if al is None:
            al, largest = self._aligned_from_landmarks(source, lm)
        if computed:
            self._put_aligned(keys["aligned"], al, meta, source, largest)
        tr = None if force or computed else self._get("trajectory", keys["trajectory"])
        if tr is None:
            computed = True
            aligned_ok = lm.success & ~np.isnan(al["aligned_landmarks"]).any(axis=(1, 2))
            with self.times.timed("trajectory"):
                trajectory = compute_trajectory(al["aligned_landmarks"], aligned_ok, self.cfg.trajectory)
            tr = {"trajectory": np.asarray(trajectory, dtype=np.float32)}
            self._put("trajectory", keys["trajectory"], tr, meta)
        record = _record(source.sequence_id, lm, al, tr["trajectory"])
        return SequenceOutcome(
            source.sequence_id,
            SequenceStatus.OK,
            "",
            record=record,
            cached=not computed,
            n_frames=n,
            face_ratio=ratio,
            keys=keys,
            landmark_arrays=lm,
        )

    def _frames(self, source: SequenceSource) -> tuple[np.ndarray, Iterator[DecodedFrame]]:
        frames = self.cfg.frames
        line = timeline(source, fps=frames.fps, max_pixels=frames.max_pixels)
        indices = select_indices(line.n_frames, source.peak_index, frames)
        color = self.cfg.align.color
        return indices, iter_frames(source, indices, color, max_pixels=frames.max_pixels, frame_times=line)

    def _landmarks_and_aligned(self, source: SequenceSource) -> tuple[LandmarkArrays, dict, str, int]:
        """Decode, track landmarks and align in one streaming pass. Every result passes the landmark checks
        (:func:`~stages.preprocess.landmarks.base.checked`), whatever the backend. Returns the landmarks level,
        the aligned level, the :func:`landmark_problems` of the failed frames and the largest frame's pixels."""
        times = self.times
        with times.timed("decode"):
            indices, frames = self._frames(source)
        pending: deque[DecodedFrame] = deque()
        decode = [0.0]  # decode seconds spent inside the landmarker's pulls, subtracted from its time

        def images() -> Iterator[np.ndarray]:
            while True:
                start = time.perf_counter()
                frame = next(frames, None)
                decode[0] += time.perf_counter() - start
                if frame is None:
                    return
                pending.append(frame)
                yield frame.image

        provided = _provided_paths(source, indices)
        landmarker = self.landmarker
        lm_times = getattr(landmarker, "times", None)
        detect_before = lm_times.get("detect") if isinstance(lm_times, StageTimes) else 0.0
        idx, ts, pts, ok, conf, crops, crop_pts, notes = [], [], [], [], [], [], [], []
        results = landmarker.track_sequence(images(), provided=provided)
        landmarks_seconds, largest = 0.0, 0
        while True:
            start = time.perf_counter()
            result = next(results, None)
            landmarks_seconds += time.perf_counter() - start
            if result is None:
                break
            frame = pending.popleft()
            largest = max(largest, frame.image.shape[0] * frame.image.shape[1])
            result = checked(result, frame.image.shape)
            if not result.success:
                notes.append(result.note)
            idx.append(frame.index)
            ts.append(frame.timestamp)
            pts.append(result.points)
            ok.append(result.success)
            conf.append(result.confidence)
            with times.timed("align"):
                crop, cpts = align_one(frame.image, result.points, result.success, self.cfg.align)
            crops.append(crop)
            crop_pts.append(cpts)
        detect = (lm_times.get("detect") - detect_before) if isinstance(lm_times, StageTimes) else 0.0
        times.add("decode", decode[0])
        times.add("detect", detect)
        times.add("track", landmarks_seconds - decode[0] - detect)
        lm = LandmarkArrays(
            frame_indices=np.asarray(idx, dtype=np.int64),
            timestamps=np.asarray(ts, dtype=np.float64),
            landmarks=np.asarray(pts, dtype=np.float32).reshape(-1, N_POINTS, 2),
            success=np.asarray(ok, dtype=bool),
            confidence=np.asarray(conf, dtype=np.float32),
        )
        return lm, stack_aligned(crops, crop_pts, self.cfg.align), landmark_problems(notes), largest

    def _aligned_from_landmarks(self, source: SequenceSource, lm: LandmarkArrays) -> tuple[dict, int]:
        """Re-align from cached landmarks (the align config changed, or the entry keeps no crops): the aligned level
        and the largest frame's pixels."""
        _indices, frames = self._frames(source)
        crops, crop_pts, largest = [], [], 0
        for frame, points, ok in zip(frames, lm.landmarks, lm.success, strict=False):
            largest = max(largest, frame.image.shape[0] * frame.image.shape[1])
            with self.times.timed("align"):
                crop, cpts = align_one(frame.image, points, bool(ok), self.cfg.align)
            crops.append(crop)
            crop_pts.append(cpts)
        return stack_aligned(crops, crop_pts, self.cfg.align), largest

    def _put_aligned(self, key: str, al: dict, meta: dict, source: SequenceSource, largest: int) -> None:
        """Store the aligned level: without its crops where :func:`keeps_crops` says so."""
        if keeps_crops(source, largest, self.cfg.align):
            self._put("aligned", key, al, meta)
        else:
            arrays = {"aligned_landmarks": al["aligned_landmarks"]}
            self._put("aligned", key, arrays, {**meta, DERIVED: checksum(al, "")})

    def _get_aligned(self, source: SequenceSource, key: str, lm: LandmarkArrays) -> dict | None:
        """The cached aligned level, its crops re-aligned from the source when the entry keeps none; None when it
        is missing or damaged, the source cannot be read, or the re-aligned level's checksum differs from the one the
        entry was made with (the source changed)."""
        if self.caches is None:
            return None
        with self.times.timed("cache_read"):
            entry = self.caches["aligned"].load(key)
        if entry is None or not entry.meta.get(DERIVED):
            return None if entry is None else entry.arrays
        try:
            al, _largest = self._aligned_from_landmarks(source, lm)
        except StageError:
            return None
        return al if checksum(al, "") == entry.meta[DERIVED] else None


def _provided_paths(source: SequenceSource, indices: np.ndarray) -> list[str] | None:
    paths = getattr(source, "landmark_paths", None)
    if not paths:
        return None
    return [paths[i] if i < len(paths) else "" for i in indices]


def _record(sequence_id: str, lm: LandmarkArrays, al: dict, trajectory: np.ndarray) -> SequenceRecord:
    return SequenceRecord(
        sequence_id=sequence_id,
        **lm.to_arrays(),
        aligned=al["aligned"],
        aligned_landmarks=al["aligned_landmarks"],
        trajectory=trajectory,
    )
