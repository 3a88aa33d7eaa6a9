"""Source faces for the demo generator: load photos with 68-point ground truth, score them, pick the best.

A source face is a real photo (RGB uint8) plus its 68 landmarks ((x, y), 0-based pixels). Faces come from a
folder of ``NAME.jpg|png`` + ``NAME.pts`` pairs (300-W format: ``version``/``n_points`` header, ``{``, 68 lines
``x y`` in 1-based pixel coordinates, ``}``), or, without a folder, from scikit-image's astronaut photo whose
landmarks dlib's HOG detector and 68-point predictor provide.

Choice is automatic and deterministic: faces are ranked by near-frontal symmetry, closed/neutral mouth and open
eyes (measured on the landmarks after rotating the eye line horizontal) with a penalty for spectacles (edge
energy at the nose bridge and under the eyes), and verified in rank order (by default: dlib finds the face and
agrees with the ground truth; the generator checks the finished neutral frame instead) until enough pass.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_manifests.demo import geometry as g
from data_manifests.errors import ManifestError
from stages import face_geometry as fg

log = logging.getLogger(__name__)

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
    """:func:`stages.face_geometry.read_pts` ((68, 2) float64, 0-based) with a :class:`ManifestError` naming the
    file when it cannot be read or is not a 68-point ``.pts`` file."""
    try:
        return fg.read_pts(path)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read landmark file ({exc})") from exc
    except ValueError as exc:
        raise ManifestError(f"{path}: {exc}") from exc


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
    return fg.transform_points(pts, m)


def score_face(pts: np.ndarray, image_size: tuple[int, int]) -> FaceScore:
    """Rank a face for use as a neutral subject from its landmarks; ``image_size`` is (width, height)."""
    q = upright_points(pts)
    m = g.measure(q)
    iod = max(m.iod, 1e-6)
    yaw = abs((q[30, 0] - q[0, 0]) / max(q[16, 0] - q[0, 0], 1e-6) - 0.5)
    yaw += 0.5 * abs(np.log(max(np.linalg.norm(q[39] - q[36]), 1e-6) / max(np.linalg.norm(q[45] - q[42]), 1e-6)))
    gap = float(np.mean(np.linalg.norm(q[fg.INNER_UPPER] - q[fg.INNER_LOWER], axis=1))) / iod
    smile = float(((q[51, 1] + q[57, 1]) / 2 - (q[48, 1] + q[54, 1]) / 2) / iod)
    ear = min(m.eye_h) / max(m.eye_w, 1e-6)
    total = 4.0 * yaw + 3.0 * max(gap - 0.02, 0.0) + 2.0 * max(smile - 0.02, 0.0) + 2.0 * max(0.25 - ear, 0.0)
    reason = None
    w, h = image_size
    margin = 0.05 * m.face_w
    if m.iod < 40:
        reason = f"face too small (outer-eye distance {m.iod:.0f} px)"
    elif (
        pts[:, 0].min() < margin
        or pts[:, 1].min() < margin
        or pts[:, 0].max() > w - 1 - margin
        or pts[:, 1].max() > h - 1 - margin
    ):
        reason = "landmarks touch the image border"
    elif ear < 0.17:
        reason = f"eyes closed (aspect {ear:.2f})"
    elif yaw > 0.3:
        reason = f"not frontal (yaw score {yaw:.2f})"
    elif gap > 0.35:
        reason = f"mouth wide open (gap {gap:.2f} x eye distance)"
    return FaceScore(total=float(total), yaw=float(yaw), mouth_gap=gap, smile=smile, eye_open=float(ear), reason=reason)


# ----------------------------------------------------------------------------------------------- dlib


@functools.lru_cache(maxsize=1)
def _dlib_models():
    """dlib's HOG detector and 68-point predictor; the model file is found by the dlib landmark backend
    (:func:`stages.preprocess.landmarks.dlib.models.model_path`). ManifestError when it is missing."""
    import dlib

    from stages.errors import MissingWeightsError
    from stages.preprocess.landmarks.dlib.models import PREDICTOR_FILE, model_path

    try:
        path = model_path(PREDICTOR_FILE)
    except MissingWeightsError as exc:
        raise ManifestError(str(exc)) from exc
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


# ----------------------------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Candidate:
    """A usable photo of a faces folder with its rank (``total``: landmark score + glasses penalty)."""

    name: str
    image_path: Path
    pts_path: Path
    score: FaceScore
    glasses: float
    total: float


def glasses_score(image: np.ndarray, pts: np.ndarray) -> float:
    """Edge energy of a spectacle bridge between the eyes times that of frame rims under the eyes, relative to
    the cheek texture (about 1-4 without glasses, 6-25 with). ``image`` RGB or grey, ``pts`` its landmarks."""
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mat = g.similarity(g.roll_degrees(pts), 1.0, tuple(pts.mean(axis=0)), (0.0, 0.0))
    h, w = grey.shape
    up = cv2.warpAffine(grey.astype(np.float32), mat, (w, h), borderMode=cv2.BORDER_REPLICATE)
    q = fg.transform_points(pts, mat)
    iod = float(np.linalg.norm(q[36] - q[45]))
    gy = np.abs(cv2.Sobel(up, cv2.CV_32F, 0, 1, ksize=3))
    gx = np.abs(cv2.Sobel(up, cv2.CV_32F, 1, 0, ksize=3))

    def box(img: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
        xa, xb = int(np.clip(x0, 0, w - 1)), int(np.clip(x1, 1, w))
        ya, yb = int(np.clip(y0, 0, h - 1)), int(np.clip(y1, 1, h))
        patch = img[ya : max(yb, ya + 1), xa : max(xb, xa + 1)]
        return float(patch.mean()) if patch.size else 0.0

    span = q[42, 0] - q[39, 0]
    eye_y = (q[39, 1] + q[42, 1]) / 2
    bridge = box(gy, q[39, 0] + 0.2 * span, q[42, 0] - 0.2 * span, eye_y - 0.25 * iod, eye_y + 0.05 * iod)
    rims = []
    for eye in (fg.RIGHT_EYE, fg.LEFT_EYE):
        c = q[eye].mean(axis=0)
        ew = float(np.linalg.norm(q[eye[0]] - q[eye[3]]))
        rims.append(box(gy, c[0] - 0.5 * ew, c[0] + 0.5 * ew, c[1] + 0.12 * iod, c[1] + 0.3 * iod))
    skin = box(gx, q[2, 0] + 0.05 * iod, q[31, 0] - 0.05 * iod, q[29, 1], q[33, 1]) + 1.0
    return bridge / skin * float(np.mean(rims)) / skin


def rank_faces(faces_dir: Path) -> tuple[list[Candidate], list[str]]:
    """Usable photos of ``faces_dir``, best first (ties by name), and the rejected ones with reasons."""
    ranked: list[Candidate] = []
    rejects: list[str] = []
    for img_path, pts_path in _pairs(faces_dir):
        try:
            pts = read_pts(pts_path)
            image = _read_rgb(img_path)
        except ManifestError as exc:
            rejects.append(str(exc))
            continue
        sc = score_face(pts, (image.shape[1], image.shape[0]))
        if sc.reason:
            rejects.append(f"{pts_path.name}: {sc.reason}")
            continue
        gl = glasses_score(image, pts)
        total = sc.total + 0.12 * max(gl - 5.0, 0.0)
        ranked.append(Candidate(pts_path.stem, img_path, pts_path, sc, gl, total))
    ranked.sort(key=lambda c: (c.total, c.name))
    return ranked, rejects


def load_face(c: Candidate) -> SourceFace:
    """The photo and landmarks of a candidate."""
    return SourceFace(name=c.name, image=_read_rgb(c.image_path), landmarks=read_pts(c.pts_path))


def source_agrees_with_dlib(face: SubjectFace, index: int) -> bool:
    """Default acceptance: dlib finds the face in the photo within :data:`DLIB_MAX_NME` of its ground truth."""
    found = dlib_landmarks(face.face.image)
    return found is not None and fg.nme(found, face.face.landmarks) <= DLIB_MAX_NME


def choose_faces(
    faces_dir: Path, n: int, accept: Callable[[SubjectFace, int], bool] | None = None, verify: bool = True
) -> list[SubjectFace]:
    """The ``n`` best faces of ``faces_dir`` (see module doc), each photo used once while enough are usable.

    Candidates are tried in rank order; ``accept(subject_face, subject_index)`` decides (default:
    :func:`source_agrees_with_dlib`; skipped when ``verify`` is False or dlib is missing). When fewer photos
    pass than ``n``, accepted ones are reused as variants (mirrored, morphed) with a warning. Raises
    :class:`ManifestError` when the folder holds no usable face.
    """
    ranked, rejects = rank_faces(faces_dir)
    check = (accept or source_agrees_with_dlib) if verify and _dlib_available() else None
    chosen: list[SourceFace] = []
    for cand in ranked:
        if len(chosen) >= n:
            break
        face = load_face(cand)
        if check is not None and not check(SubjectFace(face, 0), len(chosen)):
            rejects.append(f"{cand.name}: dlib does not find it reliably")
            continue
        chosen.append(face)
    if not chosen:
        raise ManifestError(f"{faces_dir}: no usable face photo with a .pts file ({len(rejects)} rejected)")
    if len(chosen) < n:
        log.warning(
            "%s: only %d usable faces for %d subjects; reusing them as mirrored/morphed variants",
            faces_dir,
            len(chosen),
            n,
        )
    return [SubjectFace(face=chosen[i % len(chosen)], variant=i // len(chosen)) for i in range(n)]


def fallback_faces(n: int) -> list[SubjectFace]:
    """``n`` subjects made from scikit-image's astronaut photo (landmarks by dlib), with a warning."""
    log.warning(
        "no faces folder given: demo subjects are variants (mirror, morph, lighting) of one photo, "
        "the %s; pass faces_dir for distinct subjects",
        FALLBACK_SOURCE,
    )
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
        log.warning("dlib check of source faces skipped: %s", exc)
        return False
    return True
