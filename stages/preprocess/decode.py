"""Decode stage: which frames of a sequence to keep, when each frame is shown, and reading exactly those frames.

A sequence is either a folder of frames (``SequenceSource.frame_paths``, in manifest order) or a video file
(``SequenceSource.video_path``). Frame indices are 0-based positions in that list or in the video's displayed
frames. Timestamps (:func:`timeline`) are seconds: a video's come from each frame's presentation time stamp
(:mod:`stages.preprocess.video`), so variable frame rates and containers without a frame duration keep their
true timeline; frame folders have none and use ``index / fps`` with the configured ``fps``.

Images are read by :mod:`stages.preprocess.image_file` (upright, EXIF orientation applied); images and video
frames larger than ``FrameSelectionConfig.max_pixels`` are refused from their headers, before any decoding.
Videos are read with decord or PyAV (:mod:`stages.preprocess.video`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field

from stages.errors import StageError
from stages.image import Color
from stages.later_settings import LaterSettings
from stages.preprocess.image_file import DEFAULT_MAX_PIXELS, check_pixels, read_image
from stages.preprocess.video import probe_video, read_video

ReaderName = Literal["auto", "decord", "pyav"]


class FrameSelectionConfig(LaterSettings):
    """Which frames of a sequence to keep (sequences run from onset/neutral at frame 0 to the peak)."""

    model_config = ConfigDict(extra="forbid")
    AS_BEFORE: ClassVar[dict[str, object]] = {"max_pixels": DEFAULT_MAX_PIXELS}  # not dumped at its default

    mode: Literal["all", "first_last", "uniform"] = Field(
        "all",
        description="'all': every frame; 'first_last': the first frame plus the last `last_k` frames up to "
        "the peak; 'uniform': `n` frames sampled uniformly from onset (frame 0) to the peak.",
    )
    last_k: int = Field(3, ge=1, description="Frames ending at the peak kept by 'first_last' (frames).")
    n: int = Field(16, ge=1, description="Frames sampled by 'uniform' (frames).")
    fps: float = Field(30.0, gt=0, description="Frame rate assumed for frame folders' timestamps (frames/s).")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="Largest image or video frame read (width x height, pixels); larger ones fail from their "
        "header, before decoding (a small compressed file can declare gigabytes of pixels).",
    )


@dataclass(frozen=True)
class SequenceSource:
    """One sequence to decode: exactly one of ``frame_paths`` (ordered image files) or ``video_path``.

    ``peak_index`` is the 0-based index of the expression's peak; ``None`` means the last frame.
    ``landmark_paths``: the dataset's own per-frame landmark files aligned with ``frame_paths`` ('' where a
    frame has none), read by the ``provided`` landmark backend; empty when the dataset has none.
    """

    sequence_id: str
    frame_paths: tuple[str, ...] = ()
    video_path: str | None = None
    peak_index: int | None = None
    landmark_paths: tuple[str, ...] = ()


@dataclass
class DecodedFrame:
    """A decoded frame: 0-based ``index``, ``timestamp`` (s), ``image`` uint8 [H, W] grey or [H, W, 3] RGB."""

    index: int
    timestamp: float
    image: np.ndarray


# ------------------------------------------------------------------------------------------ selection


def select_indices(n_frames: int, peak_index: int | None, cfg: FrameSelectionConfig) -> np.ndarray:
    """Sorted unique 0-based int64 indices of the frames to keep.

    ``peak_index`` defaults to the last frame; 'first_last' and 'uniform' exclude frames after the peak. A
    sequence shorter than a mode needs gives as many frames as exist, never duplicates. Raises ``StageError``
    when ``peak_index`` lies outside ``0..n_frames-1``.
    """
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    peak = n_frames - 1 if peak_index is None else int(peak_index)
    if not 0 <= peak < n_frames:
        raise StageError(f"peak index {peak} outside the sequence's frames 0..{n_frames - 1}")
    if cfg.mode == "all":
        return np.arange(n_frames, dtype=np.int64)
    if cfg.mode == "first_last":
        last = np.arange(max(0, peak - cfg.last_k + 1), peak + 1)
        return np.unique(np.concatenate([[0], last])).astype(np.int64)
    # uniform: when the onset..peak span has fewer frames than asked, keep them all; otherwise the sample step
    # is >= 1 frame and floor(x + 0.5) keeps the rounded positions distinct (np.round's half-to-even may not).
    if peak + 1 <= cfg.n:
        return np.arange(peak + 1, dtype=np.int64)
    positions = np.floor(np.linspace(0.0, float(peak), cfg.n) + 0.5).astype(np.int64)
    return np.unique(positions)


# ------------------------------------------------------------------------------------------ helpers


def _check_source(source: SequenceSource) -> None:
    if bool(source.frame_paths) == (source.video_path is not None):
        raise StageError(
            f"{source.sequence_id}: a sequence needs exactly one of frame_paths or video_path "
            f"(got {len(source.frame_paths)} frame paths and video_path={source.video_path!r})"
        )


MIN_IMAGE_SIDE = 16
"""Frame images smaller than this on either side cannot hold a face the landmarkers can find."""


def require_regular_file(path: str | os.PathLike, what: str = "file") -> None:
    """Raise :class:`StageError` unless ``path`` is a regular file (after symlinks). A FIFO, socket or device named
    like a video would block or never end when opened, so it is refused by its type, before anything opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise StageError(f"{path}: {what} missing") from None
    except OSError as exc:
        raise StageError(f"{path}: cannot stat {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a file"
        raise StageError(f"{path}: not a regular file ({kind}); refusing to open it as a {what}")


def _as_index_array(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx[0] < 0 or np.any(np.diff(idx) <= 0)):
        raise ValueError("frame indices must be non-negative, sorted ascending and unique (select_indices)")
    return idx


# ------------------------------------------------------------------------------------------ timeline


@dataclass(frozen=True)
class Timeline:
    """When each frame of a sequence is shown: ``times`` [n_frames] float64 seconds (ascending; a video's from
    its presentation time stamps, from its first displayed frame; a frame folder's ``index / fps``) and ``fps``
    (a video's average rate, informative only; the configured rate for frame folders)."""

    times: np.ndarray
    fps: float

    @property
    def n_frames(self) -> int:
        return int(len(self.times))


def timeline(source: SequenceSource, *, fps: float = 30.0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Timeline:
    """The :class:`Timeline` of a sequence. Frame folders: one frame per path at the assumed ``fps`` (no file
    is read). Videos: demuxed (nothing decoded); raises ``StageError("PATH: unreadable video: ...")`` when the file
    cannot be read, and a ``StageError`` naming the file when its frames have more than ``max_pixels`` pixels."""
    _check_source(source)
    if source.video_path is None:
        return Timeline(np.arange(len(source.frame_paths), dtype=np.float64) / float(fps), float(fps))
    path = source.video_path
    require_regular_file(path, "video")
    info = probe_video(path)
    check_pixels(path, (info.width, info.height) if info.width else None, max_pixels, "a video frame")
    return Timeline(info.times, info.fps if info.fps > 0 else float(fps))


def probe(source: SequenceSource, *, fps: float = 30.0) -> tuple[int, float]:
    """(n_frames, fps) of a sequence (see :func:`timeline`): frame folders give (number of paths, ``fps``)."""
    line = timeline(source, fps=fps, max_pixels=np.iinfo(np.int64).max)
    return line.n_frames, line.fps


# ------------------------------------------------------------------------------------------ readers


def _iter_folder(
    paths: tuple[str, ...], idx: np.ndarray, color: Color, fps: float, max_pixels: int
) -> Iterator[DecodedFrame]:
    for i in idx:
        if i >= len(paths):
            raise StageError(f"frame index {i} beyond the sequence's {len(paths)} frame files")
        path = paths[i]
        require_regular_file(path, "frame file")
        image = read_image(path, color, max_pixels)
        if image is None:
            raise StageError(f"{path}: unreadable image frame (empty or not an image)")
        if min(image.shape[:2]) < MIN_IMAGE_SIDE:
            raise StageError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels, too small to hold a face "
                f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})"
            )
        yield DecodedFrame(int(i), float(i) / fps, image)


def iter_frames(
    source: SequenceSource,
    indices: Sequence[int] | np.ndarray,
    color: Color = "grey",
    chunk: int = 32,
    *,
    reader: ReaderName = "auto",
    fps: float = 30.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frame_times: Timeline | None = None,
) -> Iterator[DecodedFrame]:
    """Yield the frames at ``indices`` (sorted ascending, unique, 0-based), in that order, each with its
    timestamp from the sequence's :func:`timeline` (pass ``frame_times`` when already probed; videos are probed
    otherwise).

    ``color``: "grey" -> uint8 [H, W]; "rgb" -> uint8 [H, W, 3] (grey sources give 3 identical channels).
    Videos are read ``chunk`` frames at a time; ``reader`` picks decord, PyAV, or "auto" (decord, falling back
    to PyAV). ``fps`` is assumed for frame folders' timestamps. Raises ``StageError`` naming the file when a frame
    file or the video cannot be read, has more than ``max_pixels`` pixels, or an index lies beyond the sequence.
    """
    _check_source(source)
    idx = _as_index_array(indices)
    if source.video_path is None:
        yield from _iter_folder(source.frame_paths, idx, color, float(fps), max_pixels)
        return
    path = source.video_path
    line = frame_times if frame_times is not None else timeline(source, fps=fps, max_pixels=max_pixels)
    if len(idx) and idx[-1] >= line.n_frames:
        raise StageError(f"{path}: frame index {idx[-1]} beyond the video's {line.n_frames} displayed frames")
    for i, image in read_video(path, idx, color, chunk, reader):
        yield DecodedFrame(i, float(line.times[i]), image)
