"""The status and reason of a sequence from its frames: ok, too short, no face, too few faces, and why."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from stages.preprocess.landmarks.base import LANDMARK_NOTE
from stages.record import SequenceStatus


class Thresholds(Protocol):
    """What the status depends on (a :class:`~stages.preprocess.sequence.SequenceConfig` has both)."""

    min_frames: int
    min_face_ratio: float


def sequence_status(success: np.ndarray, cfg: Thresholds, problems: str = "") -> tuple[SequenceStatus, str]:
    """(status, reason) of a sequence from its per-frame face success: ok, too_short, no_face, low_face_ratio.
    ``problems`` (:func:`landmark_problems`) is appended to the reason of a sequence that fails for lack of faces."""
    n = len(success)
    if n < cfg.min_frames:
        return SequenceStatus.TOO_SHORT, f"{n} readable frames, need {cfg.min_frames}"
    found = int(success.sum())
    suffix = f"; {problems}" if problems else ""
    if found == 0:
        return SequenceStatus.NO_FACE, f"no face in any of {n} frames{suffix}"
    if found / n < cfg.min_face_ratio:
        reason = f"face in {found}/{n} frames, below min_face_ratio {cfg.min_face_ratio}{suffix}"
        return SequenceStatus.LOW_FACE_RATIO, reason
    return SequenceStatus.OK, ""


def landmark_problems(notes: list[str]) -> str:
    """What the frames' notes say about landmarks that exist but are unusable (or whose files are missing or
    malformed): how many frames and the first note, e.g. ``"2 frames with unusable landmarks, first: landmarks:
    non-finite values (S005_001_00000001_landmarks.txt)"``; '' when none."""
    bad = [note for note in notes if note.startswith(LANDMARK_NOTE)]
    if not bad:
        return ""
    return f"{len(bad)} frame{'s' if len(bad) > 1 else ''} with unusable landmarks, first: {bad[0]}"
