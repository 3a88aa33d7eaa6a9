"""Face-recognition descriptors of aligned faces: dlib's ResNet (``dlib_face_recognition_resnet_model_v1.dat``),
128-d, from local files only. Used as the first-stage regression target of the ``fn2en`` network.

One descriptor per sequence, of its peak frame (the last successful frame, the last one stacked into the
appearance input): dlib's 150 x 150 RGB face chip (``dlib.get_face_chip``, padding 0.25) is cut from the
aligned crop using the frame's 68 aligned landmarks (grey crops are replicated to RGB). ~0.1 s per face on
one CPU core, so :func:`face_descriptors` caches each result in an :class:`~stages.preprocess.cache.ArrayCache` keyed by
the content it was computed from (crop pixels, landmarks, the model file's identity).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.errors import MissingWeightsError, StageError
from stages.face_geometry import N_POINTS
from stages.preprocess.cache import ArrayCache, stable_hash
from stages.preprocess.landmarks.dlib.models import models_dir
from stages.record import SequenceRecord

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DESCRIPTOR_DIM = 128
CHIP_SIZE = 150
CHIP_PADDING = 0.25
CACHE_NAMESPACE = "face_descriptor"
DESCRIPTOR_VERSION = 1


def descriptor_model_path(path: str | Path | None = None) -> Path:
    """The recognition model file (``path`` when given, else face_recognition_models' copy);
    :class:`MissingWeightsError` naming the path when it does not exist."""
    if path is None:
        folder = models_dir()
        if folder is None:
            raise MissingWeightsError(
                f"dlib face recognition model {MODEL_FILE} not found: face_recognition_models is not installed "
                "(`pip install face-recognition-models`)"
            )
        path = folder / MODEL_FILE
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"dlib face recognition model missing: {path}")
    return path


class FaceDescriber:
    """dlib's face recognition network, loaded once. Not thread-safe or picklable: one per process."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        import dlib

        self.path = descriptor_model_path(model_path)
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(self.path))

    def chip(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """dlib's aligned 150 x 150 RGB uint8 chip of ``crop`` ([S, S] grey or [S, S, 3] RGB uint8) using
        ``landmarks`` [68, 2] (x, y) crop pixels."""
        dlib = self._dlib
        img = np.asarray(crop)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise StageError(f"face descriptor needs a [S, S] or [S, S, 3] uint8 crop; got {img.shape} {img.dtype}")
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
            raise StageError("face descriptor needs 68 finite (x, y) landmarks")
        lo, hi = np.floor(pts.min(axis=0)), np.ceil(pts.max(axis=0))
        rect = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        return np.asarray(dlib.get_face_chip(np.ascontiguousarray(img), shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """128-d float32 descriptor of one aligned face (see :meth:`chip`)."""
        return np.asarray(self._net.compute_face_descriptor(self.chip(crop, landmarks)), dtype=np.float32)


def peak_frame(record: SequenceRecord) -> int:
    """Index (0-based) of the record's last successful frame; :class:`StageError` when there is none."""
    ok = np.flatnonzero(np.asarray(record.success, dtype=bool))
    if len(ok) == 0:
        raise StageError(f"sequence {record.sequence_id}: no successful frame for a face descriptor")
    return int(ok[-1])


def face_descriptors(
    records: Sequence[SequenceRecord],
    cache_dir: str | Path | None = None,
    describer: FaceDescriber | None = None,
) -> np.ndarray:
    """Descriptors [N, 128] float32 of each record's peak frame, in order.

    ``cache_dir``: an :class:`ArrayCache` root (namespace ``face_descriptor``); found entries are reused,
    new ones written, keyed by the crop's pixels, the landmarks and the model file's name and size. None:
    nothing cached. The dlib model is loaded only if something must be computed.
    """
    cache = ArrayCache(cache_dir, CACHE_NAMESPACE) if cache_dir is not None else None
    out = np.zeros((len(records), DESCRIPTOR_DIM), dtype=np.float32)
    model_file = describer.path if describer is not None else descriptor_model_path()
    model_id = [model_file.name, model_file.stat().st_size]
    for i, rec in enumerate(records):
        t = peak_frame(rec)
        crop = np.ascontiguousarray(rec.aligned[t])
        pts = np.asarray(rec.aligned_landmarks[t], dtype=np.float32)
        key = None
        if cache is not None:
            digest = hashlib.sha256(crop.tobytes() + pts.tobytes()).hexdigest()
            key = stable_hash(CACHE_NAMESPACE, DESCRIPTOR_VERSION, crop.shape, digest, model_id)
            hit = cache.get(key)
            if hit is not None and hit["descriptor"].shape == (DESCRIPTOR_DIM,):
                out[i] = hit["descriptor"]
                continue
        describer = describer or FaceDescriber()
        out[i] = describer(crop, pts)
        if cache is not None:
            cache.put(key, {"descriptor": out[i]}, {"sequence_id": rec.sequence_id})
    return out
