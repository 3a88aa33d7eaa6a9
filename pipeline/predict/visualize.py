"""Pictures of predictions a person looks at: a key-frame strip per input and a probability timeline.

- :func:`save_prediction_picture`: top row = up to ``n_key`` key frames of the input (evenly spaced over the
  frames that were read) with their 68 landmarks, bottom row = the aligned crops the model saw for those
  frames, right = the class probabilities as bars, the predicted label highlighted; the title carries the
  status, frames and face-found ratio (and the reason when not ok).
- :func:`save_timeline_png`: window mode, each class's probability over time (window centres, seconds), with
  windows that had no usable face shaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.atomic_io import atomic_path
from stages.preprocess.decode import iter_frames
from stages.preprocess.image_file import DEFAULT_MAX_PIXELS
from stages.record import SequenceStatus

OK_COLOR, BAD_COLOR, BAR_COLOR = "#2ca02c", "#d62728", "#9ecae1"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path: Path, **kwargs: object) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically (the temp file's suffix says nothing: the format is named)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **kwargs)


def key_positions(n_frames: int, n_key: int) -> np.ndarray:
    """Up to ``n_key`` evenly spaced 0-based positions in 0..n_frames-1, first and last included."""
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n_frames - 1, min(n_key, n_frames))).astype(np.int64))


def face_region(
    landmarks: np.ndarray, success: np.ndarray, shape: tuple[int, ...], margin: float = 2.4
) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) pixel region around every found face, ``margin`` times the
    largest landmark box's side; the whole frame when no face was found."""
    h, w = shape[:2]
    boxes = [
        (p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max())
        for p, ok in zip(landmarks, success, strict=True)
        if ok
    ]
    if not boxes:
        return 0, 0, w, h
    b = np.array(boxes)
    cx, cy = (b[:, 0].min() + b[:, 2].max()) / 2, (b[:, 1].min() + b[:, 3].max()) / 2
    side = margin * max(float((b[:, 2] - b[:, 0]).max()), float((b[:, 3] - b[:, 1]).max()), 1.0)
    side = min(side, max(w, h))
    left, top = int(round(max(0.0, min(cx - side / 2, w - side)))), int(round(max(0.0, min(cy - side / 2, h - side))))
    return left, top, min(w, int(round(left + side))), min(h, int(round(top + side)))


def _title(result, classes: list[str]) -> str:
    head = f"{result.input}  |  {result.status}"
    if result.ok:
        head += f": {result.label} ({100 * result.confidence:.0f}%)"
        if result.timeline is not None:
            n_ok = int((result.timeline["status"] == SequenceStatus.OK).sum())
            head += f", mean of {n_ok}/{len(result.timeline)} windows"
    head += f"  |  {result.n_frames} frames, face in {100 * result.face_ratio:.0f}%"
    if result.reason:
        head += f"\n{result.reason}"
    if result.true_label:
        head += f"  |  true label: {result.true_label}"
    return head


def save_prediction_picture(
    result,
    classes: list[str],
    path: Path | str,
    n_key: int = 6,
    fps: float = 30.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Write the key-frame strip of one :class:`~pipeline.predict.predictor.PredictionResult` (predicted with
    ``keep=True``) as a PNG at ``path``. ``fps``: frame rate assumed for frame folders; ``max_pixels``: the
    preprocessing's pixel limit (preprocess.frames.max_pixels). Returns ``path``."""
    plt = _pyplot()
    path = Path(path)
    lm = result.landmarks
    if lm is None or result.source is None or not len(lm.frame_indices):
        fig, ax = plt.subplots(figsize=(7, 1.6), dpi=100)
        ax.axis("off")
        ax.text(0.01, 0.5, _title(result, classes), va="center", ha="left", fontsize=9, wrap=True)
        _save_png(fig, path)
        plt.close(fig)
        return path

    positions = key_positions(len(lm.frame_indices), n_key)
    indices = lm.frame_indices[positions]
    frames = {
        f.index: f.image for f in iter_frames(result.source, indices, color="rgb", fps=fps, max_pixels=max_pixels)
    }
    record = result.record
    n = len(positions)
    first = frames[int(indices[0])]
    left, top, right, bottom = face_region(lm.landmarks[positions], lm.success[positions], first.shape)
    fig = plt.figure(figsize=(2.0 * n + 3.6, 4.6), dpi=100)
    grid = fig.add_gridspec(2, n + 1, width_ratios=[1.0] * n + [1.8], wspace=0.08, hspace=0.12)
    for col, (pos, index) in enumerate(zip(positions, indices, strict=True)):
        ok = bool(lm.success[pos])
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(frames[int(index)][top:bottom, left:right])
        if ok:
            pts = lm.landmarks[pos] - np.array([left, top], dtype=np.float32)
            ax.scatter(pts[:, 0], pts[:, 1], s=4, c=OK_COLOR, linewidths=0)
        ax.set_title(
            f"t={lm.timestamps[pos]:.2f}s" + ("" if ok else " no face"),
            fontsize=8,
            color="black" if ok else BAD_COLOR,
        )
        ax.axis("off")
        ax = fig.add_subplot(grid[1, col])
        if record is not None and ok:
            ax.imshow(record.aligned[pos], cmap="gray" if record.aligned.ndim == 3 else None, vmin=0, vmax=255)
            pts = record.aligned_landmarks[pos]
            ax.scatter(pts[:, 0], pts[:, 1], s=3, c=OK_COLOR, linewidths=0)
        else:
            text = "no face" if not ok else "not used\n(sequence failed)"
            ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color=BAD_COLOR)
        ax.axis("off")
    ax = fig.add_subplot(grid[:, n])
    probs = [result.probabilities.get(c, 0.0) if result.probabilities else 0.0 for c in classes]
    colors = [OK_COLOR if result.ok and c == result.label else BAR_COLOR for c in classes]
    ax.barh(range(len(classes)), probs, color=colors)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.yaxis.tick_right()
    if result.probabilities:
        for i, p in enumerate(probs):
            ax.text(min(p + 0.02, 0.8), i, f"{p:.2f}", va="center", fontsize=7)
    else:
        ax.text(0.5, (len(classes) - 1) / 2, "no prediction", ha="center", va="center", fontsize=9, color=BAD_COLOR)
    fig.suptitle(_title(result, classes), fontsize=9)
    _save_png(fig, path, bbox_inches="tight")
    plt.close(fig)
    return path


def save_timeline_png(timeline: pd.DataFrame, classes: list[str], path: Path | str, title: str = "") -> Path:
    """Each class's probability per window (x = window centre, seconds); windows without a usable face are
    shaded. Returns ``path``."""
    plt = _pyplot()
    path = Path(path)
    centres = (timeline["window_start"] + timeline["window_end"]) / 2
    fig, ax = plt.subplots(figsize=(9, 3.4), dpi=100)
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(classes):
        ax.plot(centres, timeline[f"p_{c}"], marker="o", ms=3, lw=1.4, color=cmap(i % 10), label=c)
    for row in timeline.itertuples():
        if row.status != SequenceStatus.OK:
            ax.axvspan(row.window_start, row.window_end, color="0.85", alpha=0.5, lw=0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s, window centre)")
    ax.set_ylabel("probability")
    ax.set_title(title or "class probabilities per window (grey: no usable face)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save_png(fig, path, bbox_inches="tight")
    plt.close(fig)
    return path
