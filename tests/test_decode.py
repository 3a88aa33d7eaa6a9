"""Decode stage: frame selection, exact indices with decord and PyAV, colour, errors, reader fallback."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.errors import StageError
from stages.preprocess import video
from stages.preprocess.decode import (
    FrameSelectionConfig,
    SequenceSource,
    iter_frames,
    probe,
    select_indices,
)

N_VIDEO_FRAMES = 50
VIDEO_FPS = 25.0
BLOCK = 32  # px; 8 blocks = 8 bits of the frame index, big enough to survive lossy codecs


def _index_image(i: int) -> np.ndarray:
    """BGR frame whose 2x4 black/white blocks spell ``i`` in binary, plus a colour tint that varies with i."""
    img = np.zeros((2 * BLOCK, 4 * BLOCK, 3), np.uint8)
    for bit in range(8):
        if (i >> bit) & 1:
            r, c = divmod(bit, 4)
            img[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = 255
    return img


def _read_index(image: np.ndarray) -> int:
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    value = 0
    for bit in range(8):
        r, c = divmod(bit, 4)
        block = grey[r * BLOCK + 8 : (r + 1) * BLOCK - 8, c * BLOCK + 8 : (c + 1) * BLOCK - 8]
        value |= int(block.mean() > 128) << bit
    return value


@pytest.fixture(scope="module", params=[("mp4", "mp4v"), ("avi", "MJPG")], ids=["mp4v", "mjpg-avi"])
def index_video(request, tmp_path_factory) -> str:
    ext, fourcc = request.param
    path = tmp_path_factory.mktemp("video") / f"index.{ext}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), VIDEO_FPS, (4 * BLOCK, 2 * BLOCK))
    assert writer.isOpened(), f"cv2 cannot write {fourcc}"
    for i in range(N_VIDEO_FRAMES):
        writer.write(_index_image(i))
    writer.release()
    return str(path)


@pytest.fixture()
def frame_folder(tmp_path) -> tuple[str, ...]:
    """Six PNG frames: even ones colour, odd ones grey, each carrying its index."""
    paths = []
    for i in range(6):
        img = _index_image(i)
        img[..., 2] = 40 * i  # a red tint so colour frames are not grey
        path = tmp_path / f"f{i:03d}.png"
        cv2.imwrite(str(path), img if i % 2 == 0 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        paths.append(str(path))
    return tuple(paths)


# -------------------------------------------------------------------------------------------- frame selection


@pytest.mark.parametrize(
    ("n_frames", "peak", "cfg", "expected"),
    [
        (10, None, FrameSelectionConfig(mode="all"), list(range(10))),
        (10, 4, FrameSelectionConfig(mode="all"), list(range(10))),
        (10, None, FrameSelectionConfig(mode="first_last", last_k=3), [0, 7, 8, 9]),
        (10, 5, FrameSelectionConfig(mode="first_last", last_k=3), [0, 3, 4, 5]),
        (3, None, FrameSelectionConfig(mode="first_last", last_k=3), [0, 1, 2]),
        (1, None, FrameSelectionConfig(mode="first_last", last_k=3), [0]),
        (10, None, FrameSelectionConfig(mode="uniform", n=4), [0, 3, 6, 9]),
        (21, 10, FrameSelectionConfig(mode="uniform", n=3), [0, 5, 10]),
        (5, None, FrameSelectionConfig(mode="uniform", n=16), [0, 1, 2, 3, 4]),
        (17, None, FrameSelectionConfig(mode="uniform", n=16), None),  # step 16/15: 16 distinct, 0..16
        (0, None, FrameSelectionConfig(mode="uniform", n=16), []),
    ],
)
def test_select_indices(n_frames, peak, cfg, expected):
    got = select_indices(n_frames, peak, cfg)
    assert got.dtype == np.int64
    assert np.all(np.diff(got) > 0), "sorted and unique"
    if expected is None:
        assert len(got) == cfg.n and got[0] == 0 and got[-1] == n_frames - 1
    else:
        assert got.tolist() == expected


def test_select_indices_rejects_peak_outside_sequence():
    with pytest.raises(StageError, match="peak index 10"):
        select_indices(10, 10, FrameSelectionConfig(mode="first_last"))


def test_config_forbids_unknown_fields():
    with pytest.raises(ValueError):
        FrameSelectionConfig(mode="uniform", k=3)


# -------------------------------------------------------------------------------------------- video exactness


@pytest.mark.parametrize("reader", ["decord", "pyav", "auto"])
@pytest.mark.parametrize(
    "indices",
    [list(range(N_VIDEO_FRAMES)), [0, 1, 17, 18, 31, 48, 49], [5, 13, 29, 40], [49]],
    ids=["all", "sparse", "gaps", "last"],
)
def test_video_indices_are_exact(index_video, reader, indices):
    src = SequenceSource("v", video_path=index_video)
    frames = list(iter_frames(src, indices, "grey", chunk=3, reader=reader))
    assert [f.index for f in frames] == indices
    assert [_read_index(f.image) for f in frames] == indices, "decoded content must be the asked frame"
    assert [f.timestamp for f in frames] == pytest.approx([i / VIDEO_FPS for i in indices])


def test_probe_video(index_video):
    assert probe(SequenceSource("v", video_path=index_video)) == (N_VIDEO_FRAMES, pytest.approx(VIDEO_FPS))


@pytest.mark.parametrize("reader", ["decord", "pyav"])
def test_video_colour_layouts(index_video, reader):
    src = SequenceSource("v", video_path=index_video)
    (grey,) = iter_frames(src, [7], "grey", reader=reader)
    (rgb,) = iter_frames(src, [7], "rgb", reader=reader)
    assert grey.image.shape == (2 * BLOCK, 4 * BLOCK) and grey.image.dtype == np.uint8
    assert rgb.image.shape == (2 * BLOCK, 4 * BLOCK, 3) and rgb.image.dtype == np.uint8
    assert _read_index(grey.image) == _read_index(rgb.image) == 7


@pytest.mark.parametrize("reader", ["decord", "pyav", "auto"])
def test_index_beyond_video_is_stage_error(index_video, reader):
    with pytest.raises(StageError, match=Path(index_video).name):
        list(iter_frames(SequenceSource("v", video_path=index_video), [3, N_VIDEO_FRAMES + 5], reader=reader))


def test_auto_falls_back_to_pyav_when_decord_fails_mid_read(index_video, monkeypatch):
    calls = []

    def broken_decord(path, idx, color, chunk):
        calls.append(idx.tolist())
        yield from video._read_decord(path, idx[:2], color, chunk)
        raise RuntimeError("decord lost its way")

    monkeypatch.setitem(video.VIDEO_READERS, "decord", broken_decord)
    indices = [2, 9, 23, 24, 41]
    frames = list(iter_frames(SequenceSource("v", video_path=index_video), indices, reader="auto"))
    assert calls == [indices], "decord was tried first"
    assert [f.index for f in frames] == indices
    assert [_read_index(f.image) for f in frames] == indices


def test_auto_falls_back_when_decord_cannot_open(index_video, monkeypatch):
    def unopenable(path, idx, color, chunk):
        raise RuntimeError("cannot open")
        yield  # pragma: no cover

    monkeypatch.setitem(video.VIDEO_READERS, "decord", unopenable)
    frames = list(iter_frames(SequenceSource("v", video_path=index_video), [0, 30], reader="auto"))
    assert [_read_index(f.image) for f in frames] == [0, 30]


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video at all" * 100)
    src = SequenceSource("v", video_path=str(bad))
    with pytest.raises(StageError, match=r"broken\.mp4: unreadable video"):
        probe(src)
    for reader in ("auto", "decord", "pyav"):
        with pytest.raises(StageError, match=r"broken\.mp4"):
            list(iter_frames(src, [0], reader=reader))


# -------------------------------------------------------------------------------------------- frame folders


def test_folder_frames_grey_and_rgb(frame_folder):
    src = SequenceSource("f", frame_paths=frame_folder)
    assert probe(src, fps=10.0) == (6, 10.0)
    grey = list(iter_frames(src, [0, 1, 4], "grey", fps=10.0))
    rgb = list(iter_frames(src, [0, 1, 4], "rgb", fps=10.0))
    assert [f.index for f in grey] == [0, 1, 4]
    assert [f.timestamp for f in grey] == pytest.approx([0.0, 0.1, 0.4])
    assert [_read_index(f.image) for f in grey] == [0, 1, 4]
    assert all(f.image.ndim == 2 for f in grey) and all(f.image.shape[2] == 3 for f in rgb)
    colour = rgb[2].image  # frame 4 was written as colour BGR with red = 160
    assert colour[0, 0, 0] == 160 and colour[0, 0, 2] == 0, "colour frames come back RGB"
    converted = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(grey[2].image.astype(int) - converted).max() <= 1, "grey = luminance (imread rounds)"
    grey_as_rgb = rgb[1].image  # frame 1 was written grey
    assert np.array_equal(grey_as_rgb[..., 0], grey_as_rgb[..., 2]) and np.array_equal(
        grey_as_rgb[..., 0], grey[1].image
    )


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_unreadable_frame_names_the_file(frame_folder, damage):
    victim = Path(frame_folder[3])
    if damage == "corrupt":
        victim.write_bytes(b"garbage")
    else:
        victim.unlink()
    src = SequenceSource("f", frame_paths=frame_folder)
    frames = iter_frames(src, [0, 3, 5])
    assert next(frames).index == 0, "frames before the bad one are delivered"
    problem = "frame file missing" if damage == "missing" else "unreadable image frame"
    with pytest.raises(StageError, match=f"{victim.name}: {problem}"):
        next(frames)


def test_source_needs_exactly_one_kind():
    with pytest.raises(StageError, match="exactly one"):
        probe(SequenceSource("x"))
    with pytest.raises(StageError, match="exactly one"):
        list(iter_frames(SequenceSource("x", frame_paths=("a.png",), video_path="b.mp4"), [0]))


def test_unsorted_indices_rejected(frame_folder):
    with pytest.raises(ValueError, match="sorted"):
        list(iter_frames(SequenceSource("f", frame_paths=frame_folder), [3, 1]))


# -------------------------------------------------------------------------------------------- real media


@pytest.mark.parametrize(
    ("name", "n_frames", "fps"),
    [("single_face.mp4", 72, 30.0), ("no_face.mp4", 95, 23.67), ("face_noface.mov", 169, 26.40)],
)
def test_real_videos_probe_and_decode_ends(shared_dir, name, n_frames, fps):
    """no_face.mp4's edit list trims 3 leading frames: decord alone reports 98 and pads with copies."""
    path = shared_dir / "media" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    src = SequenceSource(name, video_path=str(path))
    n, got_fps = probe(src)
    assert n == n_frames and got_fps == pytest.approx(fps, abs=0.01)
    ends = [0, 1, n - 1]
    by_reader = {r: list(iter_frames(src, ends, "rgb", reader=r)) for r in ("decord", "pyav")}
    for frames in by_reader.values():
        assert [f.index for f in frames] == ends
        assert frames[0].image.ndim == 3 and frames[0].image.std() > 5, "a real picture, not a blank"
    for a, b in zip(by_reader["decord"], by_reader["pyav"], strict=True):
        diff = np.abs(a.image.astype(int) - b.image.astype(int)).mean()
        assert diff < 2.0, "both readers see the same frame"
