"""Decode stage: which frames of a sequence to keep, and reading exactly those frames.

A sequence is either a folder of frames (``SequenceSource.frame_paths``, in manifest order) or a video file
(``SequenceSource.video_path``). Frame indices are 0-based positions in that list or in the video's displayed
frames; timestamps are ``index / fps`` seconds (frame folders use the configured fps).

Videos are read with decord (random access, in chunks, so memory is bounded by ``chunk`` frames, not by
the video's length); when decord cannot open or read a file the reader falls back to PyAV (sequential
decoding that keeps the selected indices). ``reader="decord"`` or ``"pyav"`` forces one of them.

Frame counts come from PyAV's demuxer: decord pads files whose MP4 edit list trims leading frames with copies
of the last frame (``no_face.mp4`` in the test media: decord says 98 frames, 95 are displayed), so its count
is used only when PyAV cannot open the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stages.errors import StageError
from stages.image import Color, to_color

ReaderName = Literal["auto", "decord", "pyav"]


class FrameSelectionConfig(BaseModel):
    """Which frames of a sequence to keep (sequences run from onset/neutral at frame 0 to the peak)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["all", "first_last", "uniform"] = Field(
        "all",
        description="'all': every frame; 'first_last': the first frame plus the last `last_k` frames up to "
        "the peak; 'uniform': `n` frames sampled uniformly from onset (frame 0) to the peak.",
    )
    last_k: int = Field(3, ge=1, description="Frames ending at the peak kept by 'first_last' (frames).")
    n: int = Field(16, ge=1, description="Frames sampled by 'uniform' (frames).")
    fps: float = Field(30.0, gt=0, description="Frame rate assumed for frame folders' timestamps (frames/s).")


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


# ------------------------------------------------------------------------------------------ probing


def _pyav_probe(path: str) -> tuple[int, float]:
    """(displayed frames, fps) from PyAV's demuxer, without decoding.

    Packets whose timestamp precedes the stream's start are trimmed by the MP4 edit list and never displayed.
    """
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        start = stream.start_time if stream.start_time is not None else None
        shown = total = 0
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet
                continue
            total += 1
            if packet.pts is None or start is None or packet.pts >= start:
                shown += 1
    return (shown or total), fps


def _decord_probe(path: str) -> tuple[int, float]:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    return len(vr), float(vr.get_avg_fps())


def probe(source: SequenceSource, *, fps: float = 30.0) -> tuple[int, float]:
    """(n_frames, fps) of a sequence. Frame folders: (number of paths, the assumed ``fps``).

    Videos: displayed frames counted by PyAV's demuxer (decord when PyAV cannot open the file).
    Raises ``StageError("PATH: unreadable video: ...")`` when neither can read it.
    """
    _check_source(source)
    if source.video_path is None:
        return len(source.frame_paths), float(fps)
    path = source.video_path
    require_regular_file(path, "video")
    errors = []
    for name, fn in (("pyav", _pyav_probe), ("decord", _decord_probe)):
        try:
            n, video_fps = fn(path)
        except Exception as err:  # any reader failure means "try the next reader"
            errors.append(f"{name}: {type(err).__name__}: {err}")
            continue
        if n > 0:
            return n, (video_fps if video_fps > 0 else float(fps))
        errors.append(f"{name}: no video frames")
    raise StageError(f"{path}: unreadable video: {'; '.join(errors)}")


# ------------------------------------------------------------------------------------------ readers


def _iter_folder(paths: tuple[str, ...], idx: np.ndarray, color: Color, fps: float) -> Iterator[DecodedFrame]:
    flag = cv2.IMREAD_GRAYSCALE if color == "grey" else cv2.IMREAD_COLOR
    for i in idx:
        if i >= len(paths):
            raise StageError(f"frame index {i} beyond the sequence's {len(paths)} frame files")
        path = paths[i]
        require_regular_file(path, "frame file")
        image = _read_image(path, color, flag)
        if image is None:
            raise StageError(f"{path}: unreadable image frame (empty or not an image)")
        if min(image.shape[:2]) < MIN_IMAGE_SIDE:
            raise StageError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels, too small to hold a face "
                f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})"
            )
        yield DecodedFrame(int(i), float(i) / fps, image)


def _read_image(path: str, color: Color, flag: int) -> np.ndarray | None:
    """One image file in ``color`` (grey [H, W] or RGB [H, W, 3] uint8); None when unreadable. Common PNGs take
    :func:`stages.preprocess.png.decode_png` (same pixels, ~2.4x faster); everything else OpenCV."""
    if path.lower().endswith(".png"):
        from stages.preprocess.png import (
            decode_png,
        )  # numba: imported by the processes that decode, not by every driver

        try:
            with open(path, "rb") as fh:
                image = decode_png(fh.read(), color)
        except OSError:
            image = None
        if image is not None:
            return image
    image = cv2.imread(path, flag)
    if image is not None and color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _read_decord(path: str, idx: np.ndarray, color: Color, chunk: int) -> Iterator[DecodedFrame]:
    """Random access through decord, ``chunk`` frames per ``get_batch`` call. decord returns RGB."""
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    n, fps = len(vr), float(vr.get_avg_fps())
    if len(idx) and idx[-1] >= n:
        raise StageError(f"{path}: frame index {idx[-1]} beyond decord's {n} frames")
    for start in range(0, len(idx), chunk):
        part = idx[start : start + chunk]
        batch = vr.get_batch(part.tolist()).asnumpy()
        for i, image in zip(part, batch, strict=True):
            yield DecodedFrame(int(i), float(i) / fps, to_color(np.ascontiguousarray(image), color))
        del batch


def _read_pyav(path: str, idx: np.ndarray, color: Color, chunk: int) -> Iterator[DecodedFrame]:
    """Sequential decoding through PyAV, keeping the selected indices; stops after the last one."""
    import av

    del chunk  # sequential: one frame in memory at a time
    if not len(idx):
        return
    wanted = iter(idx.tolist())
    target = next(wanted)
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0) or 30.0
        position = -1
        for position, frame in enumerate(container.decode(stream)):
            if position < target:
                continue
            image = frame.to_ndarray(format="rgb24")
            yield DecodedFrame(position, position / fps, to_color(image, color))
            target = next(wanted, None)
            if target is None:
                return
    raise StageError(f"{path}: frame index {target} beyond the video's {position + 1} decoded frames")


VideoReaderFn = Callable[[str, np.ndarray, Color, int], Iterator[DecodedFrame]]

VIDEO_READERS: dict[str, VideoReaderFn] = {"decord": _read_decord, "pyav": _read_pyav}
"""Video readers by name; ``"auto"`` tries them in this order and moves on when one fails."""


def _read_auto(path: str, idx: np.ndarray, color: Color, chunk: int) -> Iterator[DecodedFrame]:
    """decord first; on any failure continue with PyAV from the first frame not yet yielded."""
    remaining = idx
    errors = []
    for name, reader in VIDEO_READERS.items():
        try:
            for frame in reader(path, remaining, color, chunk):
                yield frame
                remaining = remaining[1:]
            return
        except Exception as err:  # any reader failure means "try the next reader"
            errors.append(f"{name}: {type(err).__name__}: {err}")
    raise StageError(f"{path}: unreadable video: {'; '.join(errors)}")


def iter_frames(
    source: SequenceSource,
    indices: Sequence[int] | np.ndarray,
    color: Color = "grey",
    chunk: int = 32,
    *,
    reader: ReaderName = "auto",
    fps: float = 30.0,
) -> Iterator[DecodedFrame]:
    """Yield the frames at ``indices`` (sorted ascending, unique, 0-based), in that order.

    ``color``: "grey" -> uint8 [H, W]; "rgb" -> uint8 [H, W, 3] (grey sources give 3 identical channels).
    Videos are read ``chunk`` frames at a time; ``reader`` picks decord, PyAV, or "auto" (decord, falling back
    to PyAV). ``fps`` is assumed for frame folders' timestamps (videos use their own). Raises ``StageError``
    naming the file when a frame file or the video cannot be read, or an index lies beyond the sequence.
    """
    _check_source(source)
    idx = _as_index_array(indices)
    if source.video_path is None:
        yield from _iter_folder(source.frame_paths, idx, color, float(fps))
        return
    path = source.video_path
    if reader == "auto":
        yield from _read_auto(path, idx, color, max(1, chunk))
        return
    if reader not in VIDEO_READERS:
        raise StageError(f"unknown video reader {reader!r}; known: auto, {', '.join(VIDEO_READERS)}")
    try:
        yield from VIDEO_READERS[reader](path, idx, color, max(1, chunk))
    except StageError:
        raise
    except Exception as err:  # library errors become the stage's error naming the file
        raise StageError(f"{path}: unreadable video ({reader}): {type(err).__name__}: {err}") from err
