"""The one code path from a :class:`~stages.record.SequenceRecord` to model tensors (training and prediction).

Appearance: the chosen successful frames of the aligned crops, resized to ``size`` x ``size`` pixels, stacked
as channels frame-major (channel ``f * colours + c``, frames oldest first), float32 in [0, 1]; or, ``compact``,
the same pixels as their uint8 grey levels (value = level / 255, exactly) wherever the input is made of whole
grey levels (no face mask): a quarter of the memory, made float per batch by
:func:`stages.learning.training.dataset.appearance_float`.
Geometry: the record's trajectory [L, 68, 2] float32 as is (already normalised by the trajectory stage).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from stages.errors import StageError
from stages.face_geometry import N_POINTS
from stages.learning.inputs.face_mask import face_region, mask_face
from stages.learning.models.config import FRAME_MODES, ModelInputConfig
from stages.learning.models.two_stream import frames_for
from stages.record import SequenceRecord, SequenceStatus


def select_frames(success: np.ndarray, cfg: ModelInputConfig) -> np.ndarray:
    """Indices (0-based, into the record's frames) of the frames stacked for ``cfg.appearance``.

    peak = the last successful frame; last_k and frames = the last k successful frames, oldest first (the
    earliest repeated in front when fewer than k succeeded); peak_neutral = (first successful, last successful).
    """
    ok = np.flatnonzero(np.asarray(success, dtype=bool))
    if len(ok) == 0:
        raise StageError("no successful frame to build the appearance input from")
    chosen = FRAME_MODES[cfg.appearance].choose(ok, cfg.k)
    assert len(chosen) == frames_for(cfg)
    return chosen


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)


def compact_exact(cfg: ModelInputConfig) -> bool:
    """Whether ``cfg``'s appearance input is made of whole grey levels, so uint8 holds it exactly: every input
    but the face mask's (which blends in the face's mean grey, in float)."""
    return cfg.mask == "none"


def appearance_input(
    rec_aligned: np.ndarray,
    success: np.ndarray,
    cfg: ModelInputConfig,
    aligned_landmarks: np.ndarray | None = None,
    compact: bool = False,
) -> np.ndarray:
    """[T, S, S] (grey) or [T, S, S, 3] (RGB) uint8 crops -> [C, size, size] float32 in [0, 1]; with ``compact``
    and :func:`compact_exact` ``cfg``, the same input as uint8 grey levels (value x 255, exactly).

    C = frames x colours (see :func:`stages.learning.models.in_channels_for`); failed frames are never used.
    ``aligned_landmarks`` [T, 68, 2] (x, y crop pixels) are needed by ``cfg.mask = face``
    (:mod:`stages.learning.inputs.face_mask`), which keeps only the face region of each frame.
    """
    aligned = np.asarray(rec_aligned)
    if (
        aligned.ndim not in (3, 4)
        or aligned.shape[1] != aligned.shape[2]
        or (aligned.ndim == 4 and aligned.shape[3] != 3)
    ):
        raise StageError(f"aligned crops must be [T, S, S] or [T, S, S, 3]; got {list(aligned.shape)}")
    if len(success) != len(aligned):
        raise StageError(f"success has {len(success)} entries for {len(aligned)} aligned frames")
    chosen = select_frames(success, cfg)
    if cfg.mask == "face":  # at the crop's resolution, before resizing: no background pixel is mixed in
        if aligned_landmarks is None or len(aligned_landmarks) != len(aligned):
            raise StageError("model.input.mask 'face' needs the aligned landmarks of every frame")
        side = aligned.shape[1]
        frames = [
            _resize(
                mask_face(aligned[i].astype(np.float32) / np.float32(255.0), face_region(aligned_landmarks[i], side)),
                cfg.size,
            )
            for i in chosen
        ]
    elif compact and compact_exact(cfg) and aligned.dtype == np.uint8:
        frames = [_resize(aligned[i], cfg.size) for i in chosen]  # cv2 resizes uint8 to uint8, rounded
    else:
        frames = [_resize(aligned[i], cfg.size).astype(np.float32) / np.float32(255.0) for i in chosen]
    stacked = np.stack(frames)  # [F, size, size] or [F, size, size, 3]
    if stacked.ndim == 4:
        stacked = stacked.transpose(0, 3, 1, 2).reshape(-1, cfg.size, cfg.size)  # frame-major channels
    return stacked


def geometry_input(trajectory: np.ndarray) -> np.ndarray:
    """The trajectory [L, 68, 2] as float32; :class:`StageError` on a wrong shape or a non-finite value."""
    traj = np.asarray(trajectory)
    if traj.ndim != 3 or traj.shape[1:] != (N_POINTS, 2) or traj.shape[0] < 1:
        raise StageError(f"trajectory must be [L, {N_POINTS}, 2] with L >= 1; got {list(traj.shape)}")
    if not np.isfinite(traj).all():
        raise StageError("trajectory contains NaN or infinite values")
    return traj.astype(np.float32, copy=True)


def input_problem(rec: SequenceRecord, cfg: ModelInputConfig) -> str:
    """Why ``rec`` cannot become model input ("" when it can). Callers filter batches with it."""
    try:
        if rec.status != SequenceStatus.OK:
            return f"status {rec.status}"
        appearance_input(rec.aligned, rec.success, cfg, rec.aligned_landmarks, compact=True)
        geometry_input(rec.trajectory)
    except StageError as exc:
        return str(exc)
    return ""


def build_stream_inputs(
    records: Sequence[SequenceRecord], cfg: ModelInputConfig, compact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the inputs of usable records: appearance [N, C, size, size] float32 (``compact``: uint8 grey levels
    where :func:`compact_exact`; see :func:`appearance_input`), trajectory [N, L, 68, 2].

    Every record must be usable (filter with :func:`input_problem`) and all must share colour mode and L;
    otherwise :class:`StageError` naming the sequence.
    """
    if not records:
        raise StageError("no sequences to build model inputs from")
    apps, trajs = [], []
    for rec in records:
        try:
            apps.append(appearance_input(rec.aligned, rec.success, cfg, rec.aligned_landmarks, compact))
            trajs.append(geometry_input(rec.trajectory))
        except StageError as exc:
            raise StageError(f"sequence {rec.sequence_id}: {exc}") from None
        if apps[-1].shape != apps[0].shape or trajs[-1].shape != trajs[0].shape:
            raise StageError(
                f"sequence {rec.sequence_id}: inputs {apps[-1].shape} / {trajs[-1].shape} differ from "
                f"{records[0].sequence_id}'s {apps[0].shape} / {trajs[0].shape} "
                "(mixed colour or trajectory length)"
            )
    if len({a.dtype for a in apps}) > 1:  # a crop that was not uint8: every input as float, never mixed
        apps = [a.astype(np.float32) / np.float32(255.0) if a.dtype == np.uint8 else a for a in apps]
    return np.stack(apps), np.stack(trajs)
