"""Video files: their displayed frames' count, presentation times and size, and reading chosen frames by index.

Frame indices are 0-based positions among the displayed frames. Times come from each frame's presentation time
stamp (PTS), never from an average frame rate: variable-frame-rate files and containers without a frame duration
(an mkv written without one reports a nominal rate unrelated to its frames) get their true timeline.

Probing (:func:`probe_video`) demuxes with PyAV, decoding nothing: the displayed frames are the packets whose PTS
is not before the stream's start (an MP4 edit list trims the others), their times are those PTS sorted
(presentation order), in seconds from the first displayed frame. decord is used only when PyAV cannot open the
file (its per-frame times then come from ``get_frame_timestamp``). A stream without PTS falls back to index /
average frame rate.

Reading is done with decord (random access, in chunks, so memory is bounded by ``chunk`` frames) or PyAV
(sequential decoding that keeps the selected indices); ``"auto"`` tries decord, then continues with PyAV from the
first frame not yet delivered. decord pads files whose edit list trims leading frames with copies of the last
frame (``no_face.mp4`` in the test media: decord says 98 frames, 95 are displayed), so its count is never used
when PyAV can open the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from stages.errors import StageError
from stages.image import Color, to_color


@dataclass(frozen=True)
class VideoInfo:
    """A video's displayed frames: ``n_frames``; ``times`` [n_frames] float64 seconds from the first displayed
    frame (ascending, from the PTS); ``fps`` the stream's average rate (0 when unknown; informative only);
    ``width`` x ``height`` pixels (0 when unknown)."""

    n_frames: int
    times: np.ndarray
    fps: float
    width: int
    height: int


def _times_from_pts(pts: list[int | None], time_base: Fraction | None, fps: float) -> np.ndarray:
    """Sorted PTS in seconds from the first; index / ``fps`` when a PTS or the time base is missing."""
    if not pts or time_base is None or any(p is None for p in pts):
        return np.arange(len(pts), dtype=np.float64) / (fps if fps > 0 else 30.0)
    ordered = sorted(pts)
    first = ordered[0]
    return np.array([float((p - first) * time_base) for p in ordered], dtype=np.float64)


def _pyav_probe(path: str) -> VideoInfo:
    """Displayed frames, their times and the frame size from PyAV's demuxer, without decoding."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        start = stream.start_time
        shown: list[int | None] = []
        total = 0
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet
                continue
            total += 1
            if packet.pts is None or start is None or packet.pts >= start:
                shown.append(packet.pts)
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        time_base = stream.time_base
    if not shown and total:  # every packet before the start: count them all, as displayed
        shown = [None] * total
    return VideoInfo(len(shown), _times_from_pts(shown, time_base, fps), fps, width, height)


def _decord_probe(path: str) -> VideoInfo:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    n, fps = len(vr), float(vr.get_avg_fps())
    starts = np.asarray(vr.get_frame_timestamp(range(n)), dtype=np.float64)[:, 0] if n else np.zeros(0)
    if n and np.all(np.isfinite(starts)):
        times = np.sort(starts) - float(np.min(starts))
    else:
        times = np.arange(n, dtype=np.float64) / (fps if fps > 0 else 30.0)
    return VideoInfo(n, times, fps, 0, 0)


VIDEO_PROBES: dict[str, Callable[[str], VideoInfo]] = {"pyav": _pyav_probe, "decord": _decord_probe}
"""Probes by name, tried in this order."""


def probe_video(path: str) -> VideoInfo:
    """The displayed frames of the video at ``path`` (module doc). Raises ``StageError("PATH: unreadable video:
    ...")`` when no probe can read it or it has no frames."""
    errors = []
    for name, fn in VIDEO_PROBES.items():
        try:
            info = fn(path)
        except Exception as err:  # any reader failure means "try the next reader"
            errors.append(f"{name}: {type(err).__name__}: {err}")
            continue
        if info.n_frames > 0:
            return info
        errors.append(f"{name}: no video frames")
    raise StageError(f"{path}: unreadable video: {'; '.join(errors)}")


# ------------------------------------------------------------------------------------------ readers

VideoReaderFn = Callable[[str, np.ndarray, Color, int], Iterator[tuple[int, np.ndarray]]]
"""(path, sorted unique indices, colour, chunk) -> (index, image) for each index, in order."""


def _read_decord(path: str, idx: np.ndarray, color: Color, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Random access through decord, ``chunk`` frames per ``get_batch`` call. decord returns RGB."""
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    if len(idx) and idx[-1] >= n:
        raise StageError(f"{path}: frame index {idx[-1]} beyond decord's {n} frames")
    for start in range(0, len(idx), chunk):
        part = idx[start : start + chunk]
        batch = vr.get_batch(part.tolist()).asnumpy()
        for i, image in zip(part, batch, strict=True):
            yield int(i), to_color(np.ascontiguousarray(image), color)
        del batch


def _read_pyav(path: str, idx: np.ndarray, color: Color, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Sequential decoding through PyAV, keeping the selected indices; stops after the last one."""
    import av

    del chunk  # sequential: one frame in memory at a time
    if not len(idx):
        return
    wanted = iter(idx.tolist())
    target = next(wanted)
    with av.open(path) as container:
        stream = container.streams.video[0]
        position = -1
        for position, frame in enumerate(container.decode(stream)):
            if position < target:
                continue
            yield position, to_color(frame.to_ndarray(format="rgb24"), color)
            target = next(wanted, None)
            if target is None:
                return
    raise StageError(f"{path}: frame index {target} beyond the video's {position + 1} decoded frames")


VIDEO_READERS: dict[str, VideoReaderFn] = {"decord": _read_decord, "pyav": _read_pyav}
"""Video readers by name; ``"auto"`` tries them in this order and moves on when one fails."""


def read_auto(path: str, idx: np.ndarray, color: Color, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """decord first; on any failure continue with PyAV from the first frame not yet yielded."""
    remaining = idx
    errors = []
    for name, reader in VIDEO_READERS.items():
        try:
            for item in reader(path, remaining, color, chunk):
                yield item
                remaining = remaining[1:]
            return
        except Exception as err:  # any reader failure means "try the next reader"
            errors.append(f"{name}: {type(err).__name__}: {err}")
    raise StageError(f"{path}: unreadable video: {'; '.join(errors)}")


def read_video(path: str, idx: np.ndarray, color: Color, chunk: int, reader: str) -> Iterator[tuple[int, np.ndarray]]:
    """(index, image) for each of ``idx`` (sorted, unique) with ``reader`` ("auto", "decord" or "pyav").
    Raises ``StageError`` naming the file for an unknown reader, a library failure or an index beyond the video."""
    if reader == "auto":
        yield from read_auto(path, idx, color, max(1, chunk))
        return
    if reader not in VIDEO_READERS:
        raise StageError(f"unknown video reader {reader!r}; known: auto, {', '.join(VIDEO_READERS)}")
    try:
        yield from VIDEO_READERS[reader](path, idx, color, max(1, chunk))
    except StageError:
        raise
    except Exception as err:  # library errors become the stage's error naming the file
        raise StageError(f"{path}: unreadable video ({reader}): {type(err).__name__}: {err}") from err
