"""Model inputs from a SequenceRecord: which frames, in which channel order, failed frames skipped."""

from __future__ import annotations

import numpy as np
import pytest

from stages.errors import StageError
from stages.learning.inputs.streams import (
    appearance_input,
    build_stream_inputs,
    geometry_input,
    input_problem,
    select_frames,
)
from stages.learning.models import ModelInputConfig, in_channels_for
from stages.learning.models.config import FRAME_MODES
from stages.record import SequenceRecord

S = 8


def make_record(
    success: list[bool], color: bool = False, length: int = 5, seq_id: str = "s1", status: str = "ok"
) -> SequenceRecord:
    """Frame t is filled with the value 10 * (t + 1) (colour: + channel index), zeros where no face."""
    t = len(success)
    ok = np.array(success, dtype=bool)
    shape = (t, S, S, 3) if color else (t, S, S)
    aligned = np.zeros(shape, np.uint8)
    for i in range(t):
        if ok[i]:
            aligned[i] = 10 * (i + 1) + (np.arange(3, dtype=np.uint8) if color else 0)
    traj = np.zeros((length, 68, 2), np.float32)
    traj[:, 0, 0] = np.arange(length)
    landmarks = np.where(ok[:, None, None], 1.0, np.nan).astype(np.float32) * np.ones((t, 68, 2), np.float32)
    return SequenceRecord(
        sequence_id=seq_id,
        frame_indices=np.arange(t, dtype=np.int64),
        timestamps=np.arange(t, dtype=np.float64) / 30,
        landmarks=landmarks,
        success=ok,
        confidence=ok.astype(np.float32),
        aligned=aligned,
        aligned_landmarks=landmarks.copy(),
        trajectory=traj,
        status=status,
    )


def frame_values(x: np.ndarray) -> list[int]:
    """The fill value of each channel (frames were constant images)."""
    assert all(np.ptp(c) == 0 for c in x)
    return [int(round(float(c[0, 0]) * 255)) for c in x]


#                 frames: 0     1     2      3     4     5
SUCCESS = [True, True, False, True, True, False]  # last successful = 4, first = 0


@pytest.mark.parametrize(
    ("mode", "k", "expected_frames"),
    [
        ("peak", 3, [4]),
        ("last_k", 3, [1, 3, 4]),  # frame 2 failed: skipped
        ("last_k", 2, [3, 4]),
        ("last_k", 6, [0, 0, 0, 1, 3, 4]),  # fewer successes than k: the earliest repeated in front
        ("peak_neutral", 3, [0, 4]),
        ("frames", 3, [1, 3, 4]),  # the last_k frames, each a sample of its own for the network
    ],
)
def test_grey_channel_contents(mode: str, k: int, expected_frames: list[int]) -> None:
    cfg = ModelInputConfig(appearance=mode, k=k, size=S)
    rec = make_record(SUCCESS)
    assert select_frames(rec.success, cfg).tolist() == expected_frames
    x = appearance_input(rec.aligned, rec.success, cfg)
    assert x.dtype == np.float32 and x.shape == (in_channels_for(cfg, color=False), S, S)
    assert frame_values(x) == [10 * (f + 1) for f in expected_frames]
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("mode", list(FRAME_MODES))
@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("success", [SUCCESS, [True], [False] * 3 + [True] * 6])
def test_every_mode_builds_the_channels_its_model_is_built_for(mode: str, color: bool, success: list[bool]) -> None:
    """The one table of modes: whatever frames succeeded, the input has the channels ``in_channels_for`` (which
    sizes the network) promises, from successful frames only."""
    rec = make_record(success, color=color)
    for k in (1, 2, 4):
        cfg = ModelInputConfig(appearance=mode, k=k, size=S)
        chosen = select_frames(rec.success, cfg)
        assert rec.success[chosen].all() and (np.diff(chosen) >= 0).all()  # successful, oldest first
        assert appearance_input(rec.aligned, rec.success, cfg).shape == (in_channels_for(cfg, color), S, S)


def test_color_channels_are_frame_major() -> None:
    cfg = ModelInputConfig(appearance="peak_neutral", size=S)
    rec = make_record(SUCCESS, color=True)
    x = appearance_input(rec.aligned, rec.success, cfg)
    assert x.shape == (in_channels_for(cfg, color=True), S, S) == (6, S, S)
    # (neutral R, G, B, peak R, G, B)
    assert frame_values(x) == [10, 11, 12, 50, 51, 52]


def test_resize_to_model_size() -> None:
    rec = make_record([True, True])
    x = appearance_input(rec.aligned, rec.success, ModelInputConfig(appearance="peak", size=16))
    assert x.shape == (1, 16, 16)
    np.testing.assert_allclose(x, 20 / 255, rtol=1e-6)


def test_no_successful_frame_is_an_error() -> None:
    rec = make_record([False, False])
    with pytest.raises(StageError, match="no successful frame"):
        appearance_input(rec.aligned, rec.success, ModelInputConfig(size=S))
    assert "no successful frame" in input_problem(rec, ModelInputConfig(size=S))
    assert input_problem(make_record([True], status="no_face"), ModelInputConfig(size=S)) == "status no_face"
    assert input_problem(make_record([True]), ModelInputConfig(size=S)) == ""


def test_geometry_input_checks() -> None:
    traj = np.zeros((4, 68, 2), np.float64)
    out = geometry_input(traj)
    assert out.dtype == np.float32 and out.shape == (4, 68, 2)
    with pytest.raises(StageError, match="68, 2"):
        geometry_input(np.zeros((4, 67, 2)))
    bad = traj.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(StageError, match="NaN"):
        geometry_input(bad)


def test_build_inputs_stacks_and_names_bad_sequence() -> None:
    cfg = ModelInputConfig(appearance="last_k", k=2, size=S)
    recs = [make_record(SUCCESS, seq_id="a"), make_record([True, True, True], seq_id="b")]
    app, traj = build_stream_inputs(recs, cfg)
    assert app.shape == (2, 2, S, S) and traj.shape == (2, 5, 68, 2)
    assert frame_values(app[1]) == [20, 30]
    np.testing.assert_array_equal(traj[0], recs[0].trajectory)
    with pytest.raises(StageError, match="sequence c"):
        build_stream_inputs([recs[0], make_record([False], seq_id="c")], cfg)
    with pytest.raises(StageError, match="sequence d.*mixed"):
        build_stream_inputs([recs[0], make_record([True], length=7, seq_id="d")], cfg)
    with pytest.raises(StageError, match="no sequences"):
        build_stream_inputs([], cfg)
