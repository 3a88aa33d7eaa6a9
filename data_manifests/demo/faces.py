"""Source faces for the demo generator: load photos with 68-point ground truth, score them, pick the best.

A source face is a real photo (RGB uint8) plus its 68 landmarks ((x, y), 0-based pixels). Faces come from a
folder of ``NAME.jpg|png`` + ``NAME.pts`` pairs (300-W format: ``version``/``n_points`` header, ``{``, 68 lines
``x y`` in 1-based pixel coordinates, ``}``), or, without a folder, from scikit-image's astronaut photo whose
landmarks dlib's HOG detector and 68-point predictor provide.

Choice is automatic and deterministic: faces are ranked by near-frontal symmetry, closed/neutral mouth and open
eyes (measured on the landmarks after rotating the eye line horizontal), and the best are verified with dlib
(found, and agreeing with the ground truth) in rank order until enough are accepted.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_manifests.demo import geometry as g
from data_manifests.errors import ManifestError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FALLBACK_SOURCE = "scikit-image astronaut (fallback)"
DLIB_MAX_NME = 0.06  # a candidate whose dlib landmarks disagree more than this with its ground truth is skipped


@dataclass
class SourceFace:
    """A photo with its 68 landmarks. ``image``: RGB uint8 (H, W, 3); ``landmarks``: (68, 2) float64, 0-based."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class FaceScore:
    """Ranking of a candidate face (lower ``total`` is better); ``reason`` is set when it is unusable."""

    total: float
    yaw: float
    mouth_gap: float
    smile: float
    eye_open: float
    reason: str | None = None


@dataclass
class SubjectFace:
    """The face one subject is made from. ``variant`` 0 uses the photo as is; a reused photo gets variant >= 1
    (mirrored when odd) and a per-subject shape morph, so no two subjects look identical."""

    face: SourceFace
    variant: int = 0


# ----------------------------------------------------------------------------------------------- reading


def read_pts(path: Path) -> np.ndarray:
    """Read a 300-W ``.pts`` file; return (68, 2) float64 0-based pixel coordinates (file values minus 1)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read landmark file ({exc})") from exc
    if "{" not in text or "}" not in text:
        raise ManifestError(f"{path}: not a 300-W .pts file (no '{{ ... }}' block)")
    body = text.split("{", 1)[1].split("}", 1)[0].split()
    try:
        values = np.array([float(v) for v in body], dtype=np.float64)
    except ValueError as exc:
        raise ManifestError(f"{path}: non-numeric landmark value ({exc})") from exc
    if values.size != 2 * g.N_POINTS:
        raise ManifestError(f"{path}: expected {g.N_POINTS} points, found {values.size / 2:g}")
    return values.reshape(g.N_POINTS, 2) - 1.0


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ManifestError(f"{path}: cannot decode image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _pairs(faces_dir: Path) -> list[tuple[Path, Path]]:
    faces_dir = Path(faces_dir)
    if not faces_dir.is_dir():
        raise ManifestError(f"{faces_dir}: faces folder not found")
    pairs = []
    for pts in sorted(faces_dir.glob("*.pts")):
        img = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).is_file()), None)
        if img is not None:
            pairs.append((img, pts))
    return pairs


# ----------------------------------------------------------------------------------------------- scoring


def upright_points(pts: np.ndarray) -> np.ndarray:
    """The landmarks rotated about their mean so that the eye line is horizontal."""
    m = g.similarity(g.roll_degrees(pts), 1.0, tuple(pts.mean(axis=0)), (0.0, 0.0))
    return g.apply_affine(m, pts)


def score_face(pts: np.ndarray, image_size: tuple[int, int]) -> FaceScore:
    """Rank a face for use as a neutral subject from its landmarks; ``image_size`` is (width, height)."""
    q = upright_points(pts)
    m = g.measure(q)
    iod = max(m.iod, 1e-6)
    yaw = abs((q[30, 0] - q[0, 0]) / max(q[16, 0] - q[0, 0], 1e-6) - 0.5)
    yaw += 0.5 * abs(np.log(max(np.linalg.norm(q[39] - q[36]), 1e-6) / max(np.linalg.norm(q[45] - q[42]), 1e-6)))
    gap = float(np.mean(np.linalg.norm(q[g.INNER_UPPER] - q[g.INNER_LOWER], axis=1))) / iod
    smile = float(((q[51, 1] + q[57, 1]) / 2 - (q[48, 1] + q[54, 1]) / 2) / iod)
    ear = min(m.eye_h) / max(m.eye_w, 1e-6)
    total = 4.0 * yaw + 3.0 * max(gap - 0.02, 0.0) + 2.0 * max(smile - 0.02, 0.0) + 2.0 * max(0.25 - ear, 0.0)
    reason = None
    w, h = image_size
    margin = 0.05 * m.face_w
    if m.iod < 40:
        reason = f"face too small (outer-eye distance {m.iod:.0f} px)"
    elif pts[:, 0].min() < margin or pts[:, 1].min() < margin or pts[:, 0].max() > w - 1 - margin \
            or pts[:, 1].max() > h - 1 - margin:
        reason = "landmarks touch the image border"
    elif ear < 0.17:
        reason = f"eyes closed (aspect {ear:.2f})"
    elif yaw > 0.2:
        reason = f"not frontal (yaw score {yaw:.2f})"
    elif gap > 0.35:
        reason = f"mouth wide open (gap {gap:.2f} x eye distance)"
    return FaceScore(total=float(total), yaw=float(yaw), mouth_gap=gap, smile=smile, eye_open=float(ear),
                     reason=reason)


# ----------------------------------------------------------------------------------------------- dlib


def dlib_model_dir() -> Path:
    """The ``models/`` folder of the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ManifestError("face_recognition_models is not installed (pip install face-recognition-models)")
    return Path(spec.origin).parent / "models"


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    path = dlib_model_dir() / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise ManifestError(f"{path}: dlib 68-point model missing")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def dlib_landmarks(image: np.ndarray, upsample: int = 0) -> np.ndarray | None:
    """68 landmarks of the largest face dlib's HOG detector finds in an RGB or grey uint8 image, or None."""
    detector, predictor = _dlib_models()
    img = np.ascontiguousarray(image)
    rects = detector(img, upsample)
    if len(rects) == 0:
        return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(img, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error normalised by the outer-eye-corner distance (36-45) of ``truth``."""
    return float(np.linalg.norm(pred - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


# ----------------------------------------------------------------------------------------------- choosing


def choose_faces(faces_dir: Path, n: int, verify: bool = True) -> list[SubjectFace]:
    """The ``n`` best faces of ``faces_dir`` (see module doc), each photo used once while enough are usable.

    When fewer usable photos than ``n`` exist, photos are reused as variants (mirrored, morphed) with a warning.
    Raises :class:`ManifestError` when the folder holds no usable face.
    """
    ranked: list[tuple[float, str, Path, Path]] = []
    rejects: list[str] = []
    for img_path, pts_path in _pairs(faces_dir):
        try:
            pts = read_pts(pts_path)
        except ManifestError as exc:
            rejects.append(str(exc))
            continue
        size = _image_size(img_path)
        if size is None:
            rejects.append(f"{img_path}: cannot read image size")
            continue
        sc = score_face(pts, size)
        if sc.reason:
            rejects.append(f"{pts_path.name}: {sc.reason}")
            continue
        ranked.append((sc.total, pts_path.stem, img_path, pts_path))
    ranked.sort()
    chosen: list[SourceFace] = []
    can_verify = verify and _dlib_available()
    for _, name, img_path, pts_path in ranked:
        if len(chosen) >= n:
            break
        try:
            image = _read_rgb(img_path)
        except ManifestError as exc:
            rejects.append(str(exc))
            continue
        pts = read_pts(pts_path)
        if can_verify:
            found = dlib_landmarks(image)
            if found is None or nme(found, pts) > DLIB_MAX_NME:
                rejects.append(f"{name}: dlib does not find it reliably")
                continue
        chosen.append(SourceFace(name=name, image=image, landmarks=pts))
    if not chosen:
        raise ManifestError(f"{faces_dir}: no usable face photo with a .pts file ({len(rejects)} rejected)")
    if len(chosen) < n:
        warnings.warn(
            f"{faces_dir}: only {len(chosen)} usable faces for {n} subjects; reusing them as mirrored/morphed "
            "variants", stacklevel=2)
    return [SubjectFace(face=chosen[i % len(chosen)], variant=i // len(chosen)) for i in range(n)]


def fallback_faces(n: int) -> list[SubjectFace]:
    """``n`` subjects made from scikit-image's astronaut photo (landmarks by dlib), with a warning."""
    warnings.warn(
        "no faces folder given: demo subjects are variants (mirror, morph, lighting) of one photo, "
        f"the {FALLBACK_SOURCE}; pass faces_dir for distinct subjects", stacklevel=2)
    face = astronaut_face()
    return [SubjectFace(face=face, variant=i) for i in range(n)]


@functools.lru_cache(maxsize=1)
def astronaut_face() -> SourceFace:
    """scikit-image's astronaut photo, cropped to a square around the face, with dlib's landmarks."""
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut()[:320, 40:360])
    pts = dlib_landmarks(image, upsample=1)
    if pts is None:
        raise ManifestError("dlib found no face in scikit-image's astronaut photo")
    return SourceFace(name="astronaut", image=image, landmarks=pts)


def _dlib_available() -> bool:
    try:
        _dlib_models()
    except (ImportError, ManifestError) as exc:
        warnings.warn(f"dlib check of source faces skipped: {exc}", stacklevel=3)
        return False
    return True


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image read from its header (Pillow, a scikit-image dependency), or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None
