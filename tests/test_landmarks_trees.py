"""dlib's 68-point model evaluated from flat arrays (:mod:`stages.preprocess.landmarks.dlib.trees`).

Contracts: ``TreePredictor.predict(grey uint8 [H, W], box (left, top, right, bottom) pixels)`` -> [68, 2] float32
source pixels (x, y): dlib's own integer points, or unrounded with ``subpixel``. The converted copy of the model
file is reused only when sound: a damaged one is re-parsed and rewritten.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.errors import MissingWeightsError
from stages.preprocess.landmarks import LandmarkConfig, build_landmarker
from stages.preprocess.landmarks.dlib import converted, model_format, trees
from stages.preprocess.landmarks.dlib.models import PREDICTOR_FILE, DlibShapePredictor, HogDetector, model_path


@pytest.fixture(scope="module")
def model_file() -> Path:
    return model_path(PREDICTOR_FILE)


@pytest.fixture(scope="module")
def faces(astro_grey_frames) -> list[tuple[np.ndarray, tuple]]:
    """(grey frame, dlib HOG box) pairs: the astronaut face at several sizes and positions."""
    detector = HogDetector()
    pairs = []
    for frame in astro_grey_frames:
        found = detector.detect(frame)
        assert found, "the astronaut face is always detected"
        pairs.append((frame, found[0].box))
    return pairs


@pytest.fixture(scope="module")
def astro_grey_frames() -> list[np.ndarray]:
    import cv2
    from skimage.data import astronaut

    grey = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY)
    frames = []
    for scale, shift in [(1.0, 0), (0.8, 15), (1.3, -20), (1.7, 40)]:
        image = cv2.resize(grey, None, fx=scale, fy=scale)
        frames.append(np.ascontiguousarray(np.roll(image, shift, axis=1)))
    return frames


def test_model_arrays_have_dlibs_layout(model_file: Path, tmp_path: Path) -> None:
    model = converted.load_tree_model(model_file, cache_dir=tmp_path)
    levels, n_trees, n_splits = model.split_a.shape
    assert (levels, n_trees, n_splits) == (15, 500, 15)  # dlib's published 68-point model
    assert model.leaves.shape == (15, 500, 16, 136) and model.mean_shape.shape == (136,)
    assert model.anchors.shape == model.deltas.shape[:2] and model.deltas.shape[2] == 2
    assert model.split_a.max() < model.anchors.shape[1] and model.anchors.max() < 68
    assert 0.0 < model.mean_shape.min() and model.mean_shape.max() < 1.2  # box-normalised units
    assert not model.leaves.flags.writeable


def test_points_are_dlibs_own(faces, model_file: Path) -> None:
    """Same model, same arithmetic: the points equal dlib's integer points (allowing one in a thousand to land on
    the neighbouring pixel, from float rounding); with ``subpixel`` they are unrounded, within a pixel of them."""
    import dlib

    ours, fine = DlibShapePredictor(impl="trees"), DlibShapePredictor(impl="trees", subpixel=True)
    reference = dlib.shape_predictor(str(model_file))
    equal = total = 0
    for frame, box in faces:
        points, unrounded = ours.predict(frame, box), fine.predict(frame, box)
        assert points.shape == unrounded.shape == (68, 2) and points.dtype == unrounded.dtype == np.float32
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        theirs = np.array([(p.x, p.y) for p in reference(frame, rect).parts()], np.float32)
        assert np.array_equal(points, np.floor(unrounded + 0.5)) and not np.array_equal(points, unrounded)
        assert np.abs(unrounded - theirs).max() <= 1.0
        equal += int((points == theirs).all(axis=1).sum())
        total += 68
    assert equal >= total - max(1, total // 1000)


def test_dlib_implementation_still_selectable(faces) -> None:
    frame, box = faces[0]
    points = DlibShapePredictor(impl="dlib").predict(frame, box)
    assert np.array_equal(points, np.round(points))  # dlib's integer pixels
    assert LandmarkConfig().subpixel is False  # CK+48 CV chose whole pixels (BENCHMARKS.md)
    assert np.abs(points - DlibShapePredictor(impl="trees").predict(frame, box)).max() <= 1.0
    with pytest.raises(ValueError, match="unknown shape predictor"):
        DlibShapePredictor(impl="onnx")
    lm = build_landmarker(LandmarkConfig(predictor_impl="dlib")).detect_frame(frame)
    assert lm.success and np.array_equal(lm.points, np.round(lm.points))


def test_converted_copy_is_reused_and_a_damaged_one_recomputed(model_file: Path, tmp_path: Path, monkeypatch) -> None:
    first = converted.load_tree_model(model_file, cache_dir=tmp_path)
    entry = converted.converted_path(model_file, tmp_path)
    assert entry.is_file()
    first = model_format.TreeModel(
        **{f: np.array(getattr(first, f)) for f in model_format.TREE_FIELDS}
    )  # memory-mapped: copy

    calls = []
    real_parse = model_format.parse_model_file
    monkeypatch.setattr(converted, "parse_model_file", lambda path: calls.append(path) or real_parse(path))
    again = converted.load_tree_model(model_file, cache_dir=tmp_path)
    assert calls == [] and np.array_equal(again.leaves, first.leaves)  # read back, not parsed

    with open(entry, "r+b") as fh:  # flip bytes inside the leaf data
        fh.seek(entry.stat().st_size // 2)
        fh.write(b"\x13\x37\x13\x37")
    repaired = converted.load_tree_model(model_file, cache_dir=tmp_path)
    assert len(calls) == 1 and np.array_equal(repaired.leaves, first.leaves)
    assert converted._read_converted(entry) is not None  # rewritten whole

    entry.write_bytes(b"not a converted model")  # garbage header
    assert np.array_equal(converted.load_tree_model(model_file, cache_dir=tmp_path).split_a, first.split_a)
    assert len(calls) == 2


def test_a_copy_whose_arrays_do_not_fit_together_is_not_used(model_file: Path, tmp_path: Path) -> None:
    """The kernel does no bounds checks, so a converted copy is checked beyond its CRC (which covers the data,
    not the header): a split that names a feature the level does not have makes it unusable."""
    import dataclasses

    model = converted.load_tree_model(model_file, cache_dir=tmp_path)
    entry = converted.converted_path(model_file, tmp_path)
    bad_splits = np.array(model.split_a)
    bad_splits[3, 7, 0] = model.anchors.shape[1]  # one past the last feature
    converted._write_converted(entry, dataclasses.replace(model, split_a=bad_splits))  # a sound CRC
    assert converted._read_converted(entry) is None
    reloaded = converted.load_tree_model(model_file, cache_dir=tmp_path)  # re-parsed and rewritten
    assert np.array_equal(reloaded.split_a, model.split_a) and converted._read_converted(entry) is not None


def test_unwritable_cache_folder_still_loads(model_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file_not_folder"
    blocker.write_text("x")
    model = converted.load_tree_model(model_file, cache_dir=blocker)  # cannot create blocker/dlib_trees: parsed
    assert model.leaves.shape[0] == 15


@pytest.mark.parametrize(
    "content", ["empty", "noise", "zeros", "truncated_header", "truncated_leaves", "cut", "huge_sizes"]
)
def test_files_that_are_not_a_shape_predictor_are_refused(model_file: Path, tmp_path: Path, content: str) -> None:
    """Garbage, and the real model cut short anywhere (the parser must stop at the end of the buffer, never read
    past it), give one MissingWeightsError."""
    real = model_file.read_bytes()
    bad = tmp_path / "bad.dat"
    bad.write_bytes(
        {
            "empty": b"",
            "noise": b"\x01\x02" * 100,
            "zeros": b"\x01\x01" + b"\x00" * 64,
            "truncated_header": real[:5],
            "truncated_leaves": real[: len(real) // 2],
            "cut": real[:-3],
            "huge_sizes": b"\x01\x01" + b"\x04\xff\xff\xff\x7f" * 2 + b"\x01\x00" * 8,  # 2**31-1 squared
        }[content]
    )
    with pytest.raises(MissingWeightsError, match="not a dlib shape predictor"):
        converted.load_tree_model(bad, use_cache=False)
    with pytest.raises(MissingWeightsError, match="not found"):
        converted.load_tree_model(tmp_path / "missing.dat")


def test_frontal_detector_copy_detects_as_dlibs_and_a_damaged_copy_is_replaced(faces, tmp_path: Path) -> None:
    """The saved HOG detector (loaded in milliseconds instead of rebuilt) finds the same boxes and scores."""
    import dlib

    from stages.preprocess.landmarks.dlib.models import frontal_face_detector

    built = frontal_face_detector(tmp_path)  # writes the copy
    (copy,) = (tmp_path / "dlib_hog").glob("frontal-*.svm")
    loaded = frontal_face_detector(tmp_path)
    reference = dlib.get_frontal_face_detector()
    for frame, _box in faces:
        runs = [d.run(frame, 0, -0.5) for d in (built, loaded, reference)]
        assert all(str(r[0]) == str(runs[2][0]) and np.allclose(r[1], runs[2][1]) for r in runs)
    copy.write_bytes(copy.read_bytes()[:-10] + b"0123456789")  # content no longer matches the CRC in its name
    frame = faces[0][0]
    assert str(frontal_face_detector(tmp_path).run(frame, 0, 0.0)[0]) == str(reference.run(frame, 0, 0.0)[0])
    assert copy.is_file() and len(list((tmp_path / "dlib_hog").glob("frontal-*.svm"))) == 1  # rewritten in place


def test_floats_decode_dlibs_special_values() -> None:
    """dlib stores a float as (mantissa, exponent), value mantissa * 2**exponent, with exponents 32000-32002 for
    inf, -inf and nan."""
    pairs = np.array([[3, -1], [-5, 2], [0, 0], [1, 32000], [1, 32001], [1, 32002]], np.int32)
    values = model_format._floats(pairs)
    assert values[:3].tolist() == [1.5, -20.0, 0.0]
    assert values[3] == np.inf and values[4] == -np.inf and np.isnan(values[5])


def test_warm_up_kernel_compiles_what_a_real_model_calls(model_file: Path, faces, tmp_path: Path) -> None:
    """The warm-up compiles the kernel from a one-tree model of the same array kinds: a real model's call must
    then find that compiled version (no second signature), or the workers would compile again."""
    trees.warm_up_kernel()
    signatures = list(trees.predict_kernel.signatures)
    predictor = trees.TreePredictor(converted.load_tree_model(model_file, cache_dir=tmp_path))
    predictor.predict(*faces[0])
    assert list(trees.predict_kernel.signatures) == signatures
    parsed = trees.TreePredictor(converted.load_tree_model(model_file, use_cache=False))  # read-only arrays too
    parsed.predict(*faces[0])
    assert list(trees.predict_kernel.signatures) == signatures


def test_a_conversion_under_way_is_waited_for_not_repeated(model_file: Path, tmp_path: Path, monkeypatch) -> None:
    """Workers that start together convert the model once: a second loader waits on the first one's lock and
    then reads its copy instead of parsing the file again."""
    import threading

    from stages.atomic_io import file_lock

    model = converted.load_tree_model(model_file, cache_dir=tmp_path)
    entry = converted.converted_path(model_file, tmp_path)
    entry.unlink()
    parsed = []
    real_parse = model_format.parse_model_file
    monkeypatch.setattr(converted, "parse_model_file", lambda path: parsed.append(path) or real_parse(path))
    loaded = []
    with file_lock(entry.with_name(entry.name + ".lock"), timeout=5) as held:  # "another worker" converting
        assert held
        waiter = threading.Thread(
            target=lambda: loaded.append(converted.load_tree_model(model_file, cache_dir=tmp_path))
        )
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not loaded  # it waits for the lock
        converted._write_converted(entry, model)
    waiter.join(30)
    assert parsed == [] and np.array_equal(loaded[0].leaves, model.leaves)


def test_warm_up_fills_the_model_caches_and_never_raises(tmp_path: Path, monkeypatch) -> None:
    from stages.preprocess.sequence import SequenceConfig, warm_up

    monkeypatch.setenv("SEQFER_CACHE_DIR", str(tmp_path))
    warm_up(SequenceConfig())
    assert list((tmp_path / "dlib_trees").glob("*.bin")) and list((tmp_path / "dlib_hog").glob("*.svm"))
    missing = SequenceConfig.model_validate({"landmarks": {"predictor_path": str(tmp_path / "no_such.dat")}})
    warm_up(missing)  # the workers report a missing model, not the warm-up
