"""Issue 27, cases 5-8, in the preprocessing stages: true frame times, upright images, landmarks that must be a
face, and a pixel limit read from the header before any decoding."""

from __future__ import annotations

import resource
import struct
import time
import zlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.errors import StageError
from stages.face_geometry import TEMPLATE
from stages.preprocess.cache import source_fingerprint, stage_keys
from stages.preprocess.decode import FrameSelectionConfig, SequenceSource, iter_frames, timeline
from stages.preprocess.landmark_table import landmark_table
from stages.preprocess.landmarks import FrameLandmarks, LandmarkConfig, TrackingLandmarker
from stages.preprocess.landmarks.base import Detection, landmark_problem
from stages.preprocess.png import decode_png
from stages.preprocess.sequence import SequenceConfig, SequenceProcessor, sequence_keys
from stages.record import SequenceStatus

# -------------------------------------------------------------------------------------------- helpers


def _write_video(path: Path, times: list[float], size: tuple[int, int] = (64, 48)) -> None:
    """An H.264 video whose frame ``i`` is shown at ``times[i]`` seconds (each PTS set by hand, millisecond time
    base) and whose grey level spells ``i``."""
    import av

    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 6 * i % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _without_default_duration(mkv: bytes) -> bytes:
    """The Matroska file with its DefaultDuration element (ID 0x23E383) overwritten by a Void element of the same
    length, as muxers that write no frame duration leave it."""
    at = mkv.index(b"\x23\xe3\x83")
    length = 3 + 1 + (mkv[at + 3] & 0x7F)  # ID, one-byte size, value
    return mkv[:at] + bytes([0xEC, 0x80 | (length - 2)]) + bytes(length - 2) + mkv[at + length :]


VFR_TIMES = [i / 30 for i in range(30)] + [1 + i / 5 for i in range(10)]  # 30 frames in 1 s, then 5 per s


class _Stub:
    """A landmark backend that answers from a list: the same result for every frame."""

    name = "stub"

    def __init__(self, result: FrameLandmarks) -> None:
        self.result = result

    def track_sequence(self, frames, provided=None):
        for _ in frames:
            yield FrameLandmarks(self.result.points.copy(), self.result.success, 1.0, None, True, 1, "")


def _face_points(scale: float = 60.0, centre=(80.0, 60.0)) -> np.ndarray:
    return (TEMPLATE * scale + centre).astype(np.float32)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _exif(orientation: int, order: str = ">") -> bytes:
    """A minimal EXIF block (TIFF header + one IFD holding the orientation tag)."""
    head = (b"MM" if order == ">" else b"II") + struct.pack(order + "HI", 42, 8)
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(order + "H", 1) + entry + struct.pack(order + "I", 0)


def _with_exif(png: bytes, orientation: int, order: str = ">") -> bytes:
    """``png`` with an eXIf chunk right after IHDR."""
    return png[:33] + _png_chunk(b"eXIf", _exif(orientation, order)) + png[33:]


def _png_bomb(path: Path, side: int = 40000) -> None:
    """A valid grey PNG of ``side`` x ``side`` zero pixels (~1.5 MB for 40000), written without ever holding the
    image: one compressed block of zero rows ended by a full flush (so the next one compresses to the same bytes)
    repeated, then an empty final block and the Adler-32 of all those zeros."""
    rows_per_block = 100
    assert side % rows_per_block == 0
    block = bytes(rows_per_block * (side + 1))  # each row: filter byte 0 + side zero pixels
    deflate = zlib.compressobj(9)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeat = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    n = side * (side + 1)
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zero bytes
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)))
        fh.write(_png_chunk(b"IDAT", first[:2]))  # zlib header
        for _ in range(side // rows_per_block):
            fh.write(_png_chunk(b"IDAT", repeat))
        fh.write(_png_chunk(b"IDAT", b"\x03\x00" + adler.to_bytes(4, "big")) + _png_chunk(b"IEND", b""))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -------------------------------------------------------------------------------------------- case 5: times


@pytest.mark.parametrize("container", ["mp4", "mkv", "mkv-no-duration"])
def test_frame_times_are_presentation_times(tmp_path: Path, container: str) -> None:
    path = tmp_path / f"vfr.{container.split('-')[0]}"
    _write_video(path, VFR_TIMES)
    if container == "mkv-no-duration":
        path.write_bytes(_without_default_duration(path.read_bytes()))
    source = SequenceSource("v", video_path=str(path))
    line = timeline(source)
    assert line.n_frames == len(VFR_TIMES)
    np.testing.assert_allclose(line.times, VFR_TIMES, atol=1e-3)
    for reader in ("auto", "pyav") + (("decord",) if container != "mkv-no-duration" else ()):
        frames = list(iter_frames(source, [0, 29, 30, 39], reader=reader))
        assert [f.timestamp for f in frames] == pytest.approx([0.0, 29 / 30, 1.0, 2.8], abs=1e-3), reader


def test_sequence_records_and_tables_and_windows_use_the_frame_times(tmp_path: Path) -> None:
    from pipeline.predict.windows import window_bounds

    path = tmp_path / "vfr.mp4"
    _write_video(path, VFR_TIMES)
    stub = _Stub(FrameLandmarks.failed("no face detected"))
    outcome = SequenceProcessor(SequenceConfig(), landmarker=stub).process(SequenceSource("v", video_path=str(path)))
    lm = outcome.landmark_arrays
    np.testing.assert_allclose(lm.timestamps, VFR_TIMES, atol=1e-3)
    table = landmark_table("v", lm.frame_indices, lm.timestamps, lm.confidence, lm.success, lm.landmarks)
    np.testing.assert_allclose(table["timestamp"], VFR_TIMES, atol=1e-3)
    windows = window_bounds(lm.timestamps, 1.0, 1.0, float(np.median(np.diff(lm.timestamps))))
    assert len(windows.members[0]) == 30, "the first second holds the 30 frames shown in it"


def test_frame_folder_times_and_keys_are_unchanged(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], np.full((32, 32), 10 * i, np.uint8))
    source = SequenceSource("f", frame_paths=tuple(paths))
    assert [f.timestamp for f in iter_frames(source, [0, 1, 2], fps=10.0)] == [0.0, 0.1, 0.2]
    cfg = SequenceConfig()
    old = stage_keys(
        source_fingerprint(paths, None), (cfg.frames, None), (cfg.landmarks, "grey"), cfg.align, cfg.trajectory
    )
    assert sequence_keys(source, cfg) == old, "frame folders keep their cache entries"
    limited = cfg.model_copy(update={"frames": FrameSelectionConfig(max_pixels=10**6)})
    assert sequence_keys(source, limited) == old, "the pixel limit is no part of a key"
    assert "max_pixels" not in cfg.model_dump()["frames"], "configs at the default dump as before"


def test_video_entries_from_index_over_fps_are_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    _write_video(path, VFR_TIMES[:5])
    source = SequenceSource("v", video_path=str(path))
    cfg = SequenceConfig()
    old = stage_keys(
        source_fingerprint([], str(path)), (cfg.frames, None), (cfg.landmarks, "grey"), cfg.align, cfg.trajectory
    )
    assert sequence_keys(source, cfg)["landmarks"] != old["landmarks"]


# -------------------------------------------------------------------------------------------- case 6: orientation


@pytest.fixture()
def picture() -> np.ndarray:
    """RGB 48x64 with distinct corners, so every orientation gives different pixels."""
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image[:8, :8] = (255, 0, 0)
    image[-8:, -16:] = (0, 255, 0)
    return image


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for ``orientation``, written out independently of stages.image."""
    return {
        1: lambda a: a,
        2: np.fliplr,
        3: lambda a: np.rot90(a, 2),
        4: np.flipud,
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(np.swapaxes(a, 0, 1), 2),
        8: lambda a: np.rot90(a, 1),
    }[orientation](image)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["grey", "rgb", "palette"])
def test_png_orientation_is_honoured(tmp_path: Path, picture: np.ndarray, orientation: int, kind: str) -> None:
    from PIL import Image

    if kind == "palette":  # not the fast path: OpenCV decodes it
        image = np.asarray(Image.fromarray(picture).quantize(16).convert("RGB"))
        Image.fromarray(picture).quantize(16).save(tmp_path / "p.png")
        raw = (tmp_path / "p.png").read_bytes()
    else:
        image = picture[:, :, 0] if kind == "grey" else picture
        raw = cv2.imencode(".png", image if kind == "grey" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    path = tmp_path / "frame.png"
    path.write_bytes(_with_exif(raw, orientation, ">" if orientation % 2 else "<"))
    color = "grey" if kind == "grey" else "rgb"
    (frame,) = iter_frames(SequenceSource("s", frame_paths=(str(path),)), [0], color)
    assert np.array_equal(frame.image, _upright(image, orientation))
    if kind != "palette":
        assert np.array_equal(decode_png(path.read_bytes(), color), image), "decode_png returns the stored pixels"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_orientation_is_honoured(tmp_path: Path, picture: np.ndarray, orientation: int) -> None:
    from PIL import Image

    plain, rotated = tmp_path / "plain.jpg", tmp_path / "rotated.jpg"
    Image.fromarray(picture).save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(picture).save(rotated, quality=95, exif=exif.tobytes())
    stored = {  # the same coded pixels, no orientation
        "rgb": cv2.cvtColor(cv2.imread(str(plain)), cv2.COLOR_BGR2RGB),
        "grey": cv2.imread(str(plain), cv2.IMREAD_GRAYSCALE),
    }
    for color, image in stored.items():
        (frame,) = iter_frames(SequenceSource("s", frame_paths=(str(rotated),)), [0], color)
        want = _upright(image, orientation)
        assert frame.image.shape == want.shape
        assert np.abs(frame.image.astype(int) - want).max() <= 1


def test_opencv_failure_is_a_stage_error_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "odd.tif"
    cv2.imwrite(str(path), np.zeros((32, 32), np.uint8))

    def failing(*args, **kwargs):
        raise cv2.error("OpenCV(5.1.0) loadsave.cpp:613: error: (-2:Unspecified error) internal imread issue")

    monkeypatch.setattr(cv2, "imread", failing)
    with pytest.raises(StageError, match=r"odd\.tif: OpenCV cannot decode this image"):
        list(iter_frames(SequenceSource("s", frame_paths=(str(path),)), [0]))


# -------------------------------------------------------------------------------------------- case 7: landmarks


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        (np.full((68, 2), 50.0), "landmarks: all 68 points within 0.0 px"),
        (np.full((68, 2), 1e30), "landmarks: all 68 points within 0.0 px"),
        (TEMPLATE * 1e30, "points far outside the 160x120 frame"),
        (np.full((68, 2), np.nan), "landmarks: non-finite values"),
        (_face_points(centre=(400.0, 60.0)), "points far outside"),
        (_face_points(centre=(170.0, 60.0)), "landmarks: centre (170.0, 85.5) outside the 160x120 frame"),
    ],
    ids=["equal", "equal-1e30", "huge", "nan", "off-frame", "centre-off-frame"],
)
def test_landmark_problem_says_what_is_wrong(points: np.ndarray, problem: str) -> None:
    assert problem in landmark_problem(points, (120, 160))


def test_plausible_landmarks_pass() -> None:
    assert landmark_problem(_face_points(), (120, 160)) == ""
    assert landmark_problem(_face_points(centre=(150.0, 60.0)), (120, 160)) == "", "a face cut by the edge"


def _provided_sequence(tmp_path: Path, points: np.ndarray, n: int = 3) -> SequenceSource:
    frames, marks = [], []
    for i in range(n):
        frames.append(str(tmp_path / f"S005_001_{i:08d}.png"))
        cv2.imwrite(frames[-1], np.random.default_rng(i).integers(0, 256, (120, 160), dtype=np.uint8))
        marks.append(str(tmp_path / f"S005_001_{i:08d}_landmarks.txt"))
        np.savetxt(marks[-1], points, fmt="   %.7e")
    return SequenceSource("S005_001", tuple(frames), landmark_paths=tuple(marks))


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        (np.full((68, 2), 50.0), "landmarks: all 68 points within 0.0 px"),
        (TEMPLATE * 1e30, "points far outside"),
        (np.full((68, 2), np.nan), "landmarks: non-finite values"),
    ],
    ids=["equal", "huge", "nan"],
)
def test_degenerate_provided_landmarks_fail_with_the_reason(tmp_path: Path, points, problem: str) -> None:
    source = _provided_sequence(tmp_path, points)
    cfg = SequenceConfig(landmarks=LandmarkConfig(backend="provided"))
    for attempt in ("computed", "cached"):
        outcome = SequenceProcessor(cfg, tmp_path / "cache").process(source)
        assert outcome.status == SequenceStatus.NO_FACE, attempt
        assert problem in outcome.reason and "S005_001_00000000_landmarks.txt" in outcome.reason, attempt
        assert outcome.cached == (attempt == "cached")
    looked_up = SequenceProcessor(cfg, tmp_path / "cache").lookup(source)
    assert looked_up.status == SequenceStatus.NO_FACE and problem in looked_up.reason


def test_good_provided_landmarks_still_succeed(tmp_path: Path) -> None:
    outcome = SequenceProcessor(SequenceConfig(landmarks=LandmarkConfig(backend="provided"))).process(
        _provided_sequence(tmp_path, _face_points())
    )
    assert outcome.status == SequenceStatus.OK and outcome.record.aligned.max() > 0


def test_every_backend_is_checked(tmp_path: Path) -> None:
    """A backend that claims a face with collapsed points gets no face, and the reason says why."""
    source = _provided_sequence(tmp_path, _face_points())
    stub = _Stub(FrameLandmarks(np.full((68, 2), 7.0, np.float32), True, 1.0, None, True, 1))
    outcome = SequenceProcessor(SequenceConfig(), landmarker=stub).process(source)
    assert outcome.status == SequenceStatus.NO_FACE
    assert "3 frames with unusable landmarks, first: landmarks: all 68 points within 0.0 px" in outcome.reason


class _OneBox:
    def detect(self, grey, threshold=0.0):
        return [Detection((40.0, 30.0, 120.0, 110.0), 0.9)]


class _Collapsed:
    def prepare(self, image):
        return image

    def predict(self, prepared, box):
        return np.full((68, 2), 80.0, np.float32)


def test_detector_output_is_checked() -> None:
    landmarker = TrackingLandmarker("stub", LandmarkConfig(), _OneBox(), _Collapsed())
    result = landmarker.detect_frame(np.full((240, 320), 128, np.uint8))
    assert not result.success and result.note == "landmarks: all 68 points within 0.0 px"


# -------------------------------------------------------------------------------------------- case 8: pixel limit


def test_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb)
    assert bomb.stat().st_size < 2_000_000
    source = SequenceSource("bomb", frame_paths=(str(bomb),))
    before, start = _peak_rss_mb(), time.perf_counter()
    outcome = SequenceProcessor(SequenceConfig(), landmarker=_Stub(FrameLandmarks.failed("x"))).process(source)
    seconds, grown = time.perf_counter() - start, _peak_rss_mb() - before
    assert outcome.status == SequenceStatus.UNREADABLE
    assert "bomb.png: image is 40000x40000 pixels (1600.0 MP), above the limit of 50 MP" in outcome.reason
    assert seconds < 5 and grown < 200, (seconds, grown)


def test_the_bomb_is_a_real_png(tmp_path: Path) -> None:
    """The generator writes a valid stream: a small one inflates to exactly its zero rows."""
    small = tmp_path / "small.png"
    _png_bomb(small, side=300)
    assert np.array_equal(cv2.imread(str(small), cv2.IMREAD_GRAYSCALE), np.zeros((300, 300), np.uint8))
    assert np.array_equal(decode_png(small.read_bytes(), "grey"), np.zeros((300, 300), np.uint8))


def test_inflating_beyond_the_header_costs_nothing(tmp_path: Path) -> None:
    """A header that declares 100x100 pixels over a stream that inflates to 400 MB: refused after 10 kB."""
    rows = zlib.compressobj(9)
    block = bytes(4_000_000)
    data = b"".join(rows.compress(block) for _ in range(100)) + rows.flush()
    raw = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 100, 8, 0, 0, 0, 0))
    raw += _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    before = _peak_rss_mb()
    assert decode_png(raw, "grey") is None
    assert _peak_rss_mb() - before < 100


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp"])
def test_the_limit_is_configurable_and_covers_every_format(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"frame.{ext}"
    cv2.imwrite(str(path), np.full((200, 300), 90, np.uint8))
    source = SequenceSource("s", frame_paths=(str(path),))
    assert next(iter_frames(source, [0])).image.shape == (200, 300)
    with pytest.raises(StageError, match=rf"frame\.{ext}: image is 300x200 pixels \(0\.1 MP\), above the limit"):
        list(iter_frames(source, [0], max_pixels=50_000))
    cfg = SequenceConfig(frames=FrameSelectionConfig(max_pixels=50_000))
    outcome = SequenceProcessor(cfg, landmarker=_Stub(FrameLandmarks.failed("x"))).process(source)
    assert outcome.status == SequenceStatus.UNREADABLE and "300x200" in outcome.reason


def test_video_frames_have_the_limit_too(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    _write_video(path, VFR_TIMES[:3], size=(320, 240))
    source = SequenceSource("v", video_path=str(path))
    cfg = SequenceConfig(frames=FrameSelectionConfig(max_pixels=320 * 240 - 1))
    outcome = SequenceProcessor(cfg, landmarker=_Stub(FrameLandmarks.failed("x"))).process(source)
    assert outcome.status == SequenceStatus.UNREADABLE
    assert "v.mp4: a video frame is 320x240 pixels" in outcome.reason
    with pytest.raises(StageError, match="320x240"):
        list(iter_frames(source, [0], max_pixels=1000))
