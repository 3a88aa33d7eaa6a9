"""dlib's face detectors (HOG, MMOD) and 68-point shape predictor, loaded from local files only.

The model files come with ``pip install face-recognition-models`` (its ``models/`` folder); a missing file raises
:class:`~stages.errors.MissingWeightsError` naming the path and how to get it. dlib objects are neither
thread-safe nor picklable: build them once per worker process.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import zlib
from pathlib import Path

import numpy as np

from stages.atomic_io import atomic_write_bytes
from stages.errors import MissingWeightsError
from stages.image import to_grey
from stages.preprocess.landmarks.base import Box, Detection
from stages.preprocess.landmarks.dlib.cache_dir import default_cache_dir

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MMOD_FILE = "mmod_human_face_detector.dat"
HOW_TO_GET = (
    "install it with `pip install face-recognition-models` (ships the dlib model files), or point "
    "landmarks.predictor_path at a local copy of dlib's shape_predictor_68_face_landmarks.dat"
)

# Detector score -> confidence: sigmoid(GAIN * score). A score of 0 (dlib's default threshold) maps to 0.5;
# HOG scores on the 300-W test faces run 0-2.7 (score 1 -> 0.88); MMOD scores are on a similar scale.
SCORE_GAIN = 2.0


def models_dir() -> Path | None:
    """face_recognition_models' ``models/`` folder, or None when the package is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "models"


def model_path(file_name: str, override: str | None = None) -> Path:
    """Path of a dlib model file (``override`` when given); MissingWeightsError when it does not exist."""
    if override:
        path = Path(override).expanduser()
    else:
        folder = models_dir()
        if folder is None:
            raise MissingWeightsError(
                f"dlib model {file_name} not found: face_recognition_models is not installed; {HOW_TO_GET}"
            )
        path = folder / file_name
    if not path.is_file():
        raise MissingWeightsError(f"dlib model file missing: {path}; {HOW_TO_GET}")
    return path


def score_to_confidence(score: float) -> float:
    return 1.0 / (1.0 + math.exp(-SCORE_GAIN * float(score)))


def _rect(box: Box):
    import dlib

    left, top, right, bottom = (int(round(v)) for v in box)
    return dlib.rectangle(left, top, max(right, left + 1), max(bottom, top + 1))


def frontal_face_detector(cache_dir: Path | None = None):
    """dlib's frontal face detector. ``dlib.get_frontal_face_detector()`` rebuilds it from source text embedded in
    dlib (~0.5-0.6 s of every worker's start); the same detector saved by dlib reloads in milliseconds, so it is
    kept under ``cache_dir`` (default :func:`default_cache_dir`) as ``dlib_hog/frontal-<dlib version>-<crc>.svm``.
    A copy whose content does not match the CRC in its name is ignored and rewritten; an unwritable folder is
    not used."""
    import dlib

    folder = (cache_dir or default_cache_dir()) / "dlib_hog"
    prefix = f"frontal-{dlib.__version__}-"
    for path in sorted(folder.glob(f"{prefix}*.svm")) if folder.is_dir() else []:
        try:
            if f"{zlib.crc32(path.read_bytes()):08x}" == path.stem[len(prefix) :]:
                return dlib.fhog_object_detector(str(path))
        except (OSError, RuntimeError):
            pass
    detector = dlib.get_frontal_face_detector()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            saved = Path(scratch) / "detector.svm"
            detector.save(str(saved))
            data = saved.read_bytes()
        atomic_write_bytes(folder / f"{prefix}{zlib.crc32(data):08x}.svm", data)
    except (OSError, RuntimeError):
        pass
    return detector


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector (``upsample`` pyramid doublings before detecting)."""

    def __init__(self, upsample: int = 0) -> None:
        self._detector = frontal_face_detector()
        self.upsample = upsample

    def detect(self, grey: np.ndarray, threshold: float = 0.0) -> list[Detection]:
        rects, scores, _ = self._detector.run(grey, self.upsample, float(threshold))
        return [
            Detection((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), score_to_confidence(s))
            for r, s in zip(rects, scores, strict=True)
        ]


class MmodDetector:
    """dlib's CNN (MMOD) face detector from ``mmod_human_face_detector.dat``; slower, handles more poses."""

    def __init__(self, upsample: int = 0, path: str | None = None) -> None:
        import dlib

        self._detector = dlib.cnn_face_detection_model_v1(str(model_path(MMOD_FILE, path)))
        self.upsample = upsample

    def detect(self, grey: np.ndarray, threshold: float = 0.0) -> list[Detection]:
        """dlib's MMOD applies its own threshold (0); ``threshold`` can only raise it."""
        found = self._detector(grey, self.upsample)
        return [
            Detection(
                (float(d.rect.left()), float(d.rect.top()), float(d.rect.right()), float(d.rect.bottom())),
                score_to_confidence(d.confidence),
            )
            for d in found
            if d.confidence >= threshold
        ]


DETECTORS = {"hog": HogDetector, "mmod": MmodDetector}


class DlibShapePredictor:
    """dlib's 68-point regression-tree shape predictor; reads grey frames.

    ``impl='trees'`` (default) evaluates the model file with :mod:`stages.preprocess.landmarks.dlib.trees` (same
    model and arithmetic, ~2x faster; integer-pixel points like dlib's, or unrounded with ``subpixel``); ``impl='dlib'``
    calls dlib's own predictor (integer-pixel points)."""

    def __init__(self, path: str | None = None, impl: str = "trees", subpixel: bool = False) -> None:
        self.path = model_path(PREDICTOR_FILE, path)
        self.impl = impl
        if impl == "trees":
            from stages.preprocess.landmarks.dlib.converted import load_tree_model
            from stages.preprocess.landmarks.dlib.trees import TreePredictor

            self._trees = TreePredictor(load_tree_model(self.path), subpixel=subpixel)
        elif impl == "dlib":
            import dlib

            self._predictor = dlib.shape_predictor(str(self.path))
        else:
            raise ValueError(f"unknown shape predictor implementation {impl!r}: 'trees' or 'dlib'")

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(to_grey(image))

    def predict(self, prepared: np.ndarray, box: Box) -> np.ndarray:
        if self.impl == "trees":
            return self._trees.predict(prepared, box)
        shape = self._predictor(prepared, _rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
