"""Detect-then-track: the landmarker every detector-based backend (dlib, fan) shares.

Conventions as in :mod:`stages.preprocess.landmarks.base`.

Tracking (:class:`TrackingLandmarker`): the first frame is detected; each later frame runs the point predictor
once, from a box derived from the previous frame's landmarks. The predictor was trained on detector boxes, so
every detection records where the detector's box sits relative to the landmarks' stable points (brows, nose,
eyes: 17-47, which move little with the mouth and jaw): the box centre's offset from their centroid and its
width and height, in units of their RMS spread (:class:`BoxCalibration`). Derived boxes keep the detector's
aspect ratio; fitting separate x/y extents let boxes stretch frame after frame on hard faces. A tracked frame is
re-detected instead when

- the box derived from the new landmarks moved (centre) or scaled by more than ``max_drift`` of its size relative
  to the box they were predicted from (motion too fast to follow),
- the shape degenerates: non-finite points, more than a quarter of the points off-frame, the outer-eye distance
  (relative to the shape's size) outside ``IOD_RANGE`` of the last detected shape's, or a similarity-aligned
  mean point distance to that shape above ``MAX_SHAPE_RESIDUAL`` eye distances (real expression changes
  measured up to 0.13 on the test videos),
- the face patch (eye-aligned, 32x32 grey) stops resembling the previous frame's (normalised cross-correlation
  below ``min_track_similarity``): a cut, an occluder, or the face leaving,
- or ``redetect_every`` frames have passed since the last detection.

Such frames carry ``note='tracking lost (why); ...'``. A detection that finds no face, or points that cannot be a
face (:func:`~stages.preprocess.landmarks.base.landmark_problem`), gives ``success=False`` and the next frame
detects again.

Confidence: detected frames map the detector's score to [0, 1] (a monotone squashing defined by each detector;
not a calibrated probability). Tracked frames report the last detection's confidence times the patch
similarity to the previous frame (clipped to [0, 1]): it falls when the appearance changes abruptly and can
never exceed the detection's.

Multiple faces: ``multi_face='largest'`` keeps the largest detector box, ``'centre'`` the box whose centre is
closest to the frame centre; ``n_faces`` reports how many the detector saw. Tracking follows the kept face.

Small frames: when ``min(H, W) < 2 * min_face_px`` the frame is upscaled (bilinear) so its short side is about
``2 * min_face_px`` before detection and prediction; points and boxes are mapped back. A face filling such a
frame (a tight crop such as CK+48's 48x48 faces) leaves the detector no margin, so small frames are detected
with a replicated border of ``SMALL_FRAME_PAD`` of their size and a lowered score threshold
(``SMALL_FRAME_THRESHOLD``; weak candidates are used only when no normal-strength one exists). Unless
``small_frame_search='full'`` the detector first searches a copy of the work image reduced so its short side is
``CROP_SEARCH_SCALE * min_face_px`` (100 px, a 150 px padded canvas): in a tight crop the face's box spans 65-100 %
of the side, so it fits dlib's 80 px window there, and the larger pyramid levels of the full search (a 240 px
canvas) cost about half its time for nothing. With ``'crop_any'`` (the default) whatever that search finds, strong
or weak, is used, and the full search runs only when it finds nothing; with ``'crop_first'`` the full search runs
unless a normal-strength face was found there, and its result is used (strong, else weak, else the crop-scale
search's weak candidates). A face too small for the window at the crop scale (a detector box under ~0.7 of the
frame's side) is still found by the full search when the crop scale sees nothing. Measured on 1,500 FER2013 train
images and 495 CK+48 crops (a loaded 2-core machine): 'crop_first' took ~45 % less ``detect_frame`` time than
'full' on CK+48, ~20 % on FER2013 (30 % of its frames still need the full search), found 27 more FER2013 faces
and lost none, points 0.01 outer-eye distances from the full search's (median; p90 0.04 FER2013, 0.013 CK+48).
Scale 1.1 was as good and 1.4 slower with fewer faces; 1.25 leaves some room for crops less tight than CK+48's.
'crop_any' skips the full search for about half of the FER2013 frames that 'crop_first' still sends there (those with a
weak candidate at the crop scale, whose full-search face is mostly the same face): with the ready model, FER2013
PublicTest is 67.9 % either way (35 of 3,589 predictions changed: 12 now right, 12 now wrong), and CK+48's points are
the same. If that still finds nothing and ``whole_frame_fallback`` is on, the whole frame is taken as the face box,
refined once through the typical detector calibration (``n_faces=0``, ``note='whole-frame box'``, confidence
``WHOLE_FRAME_CONFIDENCE``). That fallback trusts the frame to be a face crop: only flat frames and shapes that fail the
checks above are rejected, so a small textured non-face frame does get landmarks (at low confidence); turn the fallback
off where small frames may hold no face. With ``tight_crops`` small frames skip the detector altogether and go straight
to that whole-frame box (a dataset of face crops, where the search costs most of the time and finds the frame itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stages.face_geometry import LEFT_EYE, RIGHT_EYE, TEMPLATE, eye_distance
from stages.image import to_grey
from stages.preprocess.landmarks.base import (
    STABLE_POINTS,
    Box,
    Detection,
    FaceDetector,
    FrameLandmarks,
    LandmarkConfig,
    PointPredictor,
    box_area,
    box_centre_size,
    landmark_problem,
    points_box,
    similarity_residual,
    unscale_points,
)
from stages.timing import StageTimes

WHOLE_FRAME_CONFIDENCE = 0.3
SMALL_FRAME_PAD = 0.25  # replicated border added around upscaled small frames before detection (x frame size)
SMALL_FRAME_THRESHOLD = -0.5  # detector score threshold on small frames (tight crops score low; see module doc)
STRONG_CONFIDENCE = 0.5  # detector confidence of a normal-strength detection (score 0)
CROP_SEARCH_SCALE = 1.25  # crop-scale search (crop_any, crop_first): short side of the reduced copy, x min_face_px
MIN_CONTRAST = 8.0  # grey-level std below which a small frame is not taken as a face crop
PATCH_SIZE = 32
MAX_OFF_FRAME = 0.25  # fraction of points allowed outside the frame before the shape counts as lost
IOD_RANGE = (0.6, 1.6)  # outer-eye distance vs the last detected shape's, after scale normalisation
MAX_SHAPE_RESIDUAL = 0.35  # similarity-aligned mean point distance to the detected shape, in eye distances


def _anchor(points: np.ndarray) -> tuple[float, float, float]:
    """Centre (x, y) and scale (RMS distance to the centre, pixels) of the stable points."""
    stable = points[STABLE_POINTS].astype(np.float64)
    centre = stable.mean(axis=0)
    scale = float(np.sqrt(((stable - centre) ** 2).sum(axis=1).mean()))
    return float(centre[0]), float(centre[1]), max(scale, 1e-3)


@dataclass(frozen=True)
class BoxCalibration:
    """How a detector box sits relative to the stable points (17-47): its centre's offset from their centroid and
    its width and height, all in units of their RMS spread. Boxes derived from it keep the detector's aspect
    ratio (dlib's are square), so tracking cannot stretch them."""

    dx: float
    dy: float
    w: float
    h: float

    @classmethod
    def fit(cls, points: np.ndarray, box: Box) -> BoxCalibration:
        px, py, scale = _anchor(points)
        cx, cy, w, h = box_centre_size(box)
        return cls((cx - px) / scale, (cy - py) / scale, w / scale, h / scale)

    def box_for(self, points: np.ndarray) -> Box:
        px, py, scale = _anchor(points)
        cx, cy = px + self.dx * scale, py + self.dy * scale
        w, h = self.w * scale, self.h * scale
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def box_drift(before: Box, after: Box) -> float:
    """Largest of centre shift (in box sizes) and relative size change between two boxes."""
    bx, by, bw, bh = box_centre_size(before)
    ax, ay, aw, ah = box_centre_size(after)
    size = max(np.sqrt(max(bw * bh, 1e-6)), 1e-3)
    shift = float(np.hypot(ax - bx, ay - by) / size)
    scale = float(np.sqrt(max(aw * ah, 1e-6)) / size)
    return max(shift, abs(scale - 1.0), abs(1.0 / max(scale, 1e-6) - 1.0))


def shape_problem(points: np.ndarray, reference: np.ndarray, frame_shape: tuple[int, ...]) -> str:
    """Why a tracked shape cannot be trusted ('' when plausible), judged against the last detected shape."""
    if not np.all(np.isfinite(points)):
        return "non-finite points"
    h, w = frame_shape[:2]
    off = (points[:, 0] < 0) | (points[:, 0] > w - 1) | (points[:, 1] < 0) | (points[:, 1] > h - 1)
    if off.mean() > MAX_OFF_FRAME:
        return "face left the frame"
    ref_size = np.sqrt(box_area(points_box(reference[STABLE_POINTS])))
    size = np.sqrt(box_area(points_box(points[STABLE_POINTS])))
    if size < 1e-3 or ref_size < 1e-3:
        return "shape collapsed"
    ratio = (eye_distance(points) / size) / max(eye_distance(reference) / ref_size, 1e-6)
    if not IOD_RANGE[0] <= ratio <= IOD_RANGE[1]:
        return "eye distance collapsed"
    if similarity_residual(points, reference) > MAX_SHAPE_RESIDUAL:
        return "shape degenerated"
    return ""


def face_patch(grey: np.ndarray, points: np.ndarray) -> np.ndarray:
    """PATCH_SIZE x PATCH_SIZE float32 grey patch, eye centres mapped to fixed places by a similarity
    transform; zero mean, unit norm (all zeros when flat)."""
    right = complex(*points[RIGHT_EYE].mean(axis=0))
    left = complex(*points[LEFT_EYE].mean(axis=0))
    dst_right, dst_left = complex(0.3 * PATCH_SIZE, 0.35 * PATCH_SIZE), complex(0.7 * PATCH_SIZE, 0.35 * PATCH_SIZE)
    a = (dst_left - dst_right) / (left - right if abs(left - right) > 1e-6 else 1e-6)  # scale * rotation
    t = dst_right - a * right
    matrix = np.float32([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])
    patch = cv2.warpAffine(
        grey, matrix, (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-6 else patch


def patch_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two :func:`face_patch` outputs, in [-1, 1] (0 for flat patches)."""
    return float(np.sum(a * b))


# --------------------------------------------------------------------------------------------- face choice


def choose_face(detections: Sequence[Detection], frame_shape: tuple[int, ...], policy: str) -> Detection:
    """The face kept among several: 'largest' box area (ties: higher confidence), or 'centre': box centre
    closest to the frame centre."""
    if policy == "centre":
        h, w = frame_shape[:2]

        def distance(d: Detection) -> float:
            cx, cy, _, _ = box_centre_size(d.box)
            return float(np.hypot(cx - (w - 1) / 2, cy - (h - 1) / 2))

        return min(detections, key=distance)
    return max(detections, key=lambda d: (box_area(d.box), d.confidence))


# --------------------------------------------------------------------------------------------- tracking


TYPICAL_CALIBRATION = BoxCalibration(0.0, 0.72, 3.98, 3.98)
"""dlib HOG boxes relative to the stable points: median over 100 of the 300-W faces in ../shared/faces."""


@dataclass
class _TrackState:
    points: np.ndarray  # working-image pixels
    reference: np.ndarray  # shape at the last detection (working pixels)
    calibration: BoxCalibration
    confidence: float  # of the last detection
    patch: np.ndarray
    frame_shape: tuple[int, ...]  # working-image shape; a different frame size means detect again
    since_detection: int = 0


class TrackingLandmarker:
    """Detect-then-track landmarker over any :class:`FaceDetector` and :class:`PointPredictor` (see module doc).
    One predictor call per tracked frame (a second call from the box of its own answer measured no better)."""

    def __init__(self, name: str, cfg: LandmarkConfig, detector: FaceDetector, predictor: PointPredictor) -> None:
        self.name = name
        self.cfg = cfg
        self.detector = detector
        self.predictor = predictor
        self.times = StageTimes()  # seconds in 'detect' (detector + the detected frame's prediction)

    # -- public ------------------------------------------------------------------------------------------------
    def track_sequence(
        self, frames: Iterable[np.ndarray], provided: Sequence[str] | None = None
    ) -> Iterator[FrameLandmarks]:
        """One :class:`FrameLandmarks` per frame, in order; ``provided`` is ignored (detector backends)."""
        del provided
        state: _TrackState | None = None
        for frame in frames:
            result, state = self._process(np.asarray(frame), state)
            yield result

    def detect_frame(self, frame: np.ndarray) -> FrameLandmarks:
        """Landmarks of a single image by fresh detection (no tracking)."""
        return self._process(np.asarray(frame), None)[0]

    # -- internals ---------------------------------------------------------------------------------------------
    def _upscale_factor(self, frame: np.ndarray) -> float:
        short = min(frame.shape[:2])
        target = 2 * self.cfg.min_face_px
        return target / short if 0 < short < target else 1.0

    def _process(self, frame: np.ndarray, state: _TrackState | None) -> tuple[FrameLandmarks, _TrackState | None]:
        if frame.ndim not in (2, 3) or frame.dtype != np.uint8 or min(frame.shape[:2]) < 2:
            raise ValueError(f"frames must be uint8 [H, W] or [H, W, 3]; got {frame.dtype} {frame.shape}")
        factor = self._upscale_factor(frame)
        work = frame
        if factor != 1.0:
            size = (round(frame.shape[1] * factor), round(frame.shape[0] * factor))
            work = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        grey = to_grey(work)
        prepared = self.predictor.prepare(work)

        result: FrameLandmarks | None = None
        redetect_due = (
            self.cfg.redetect_every > 0 and state is not None and (state.since_detection + 1 >= self.cfg.redetect_every)
        )
        if state is not None and state.frame_shape != grey.shape:
            state = None
        lost = ""
        if state is not None and self.cfg.track and not redetect_due:
            result, lost = self._track(grey, prepared, state)
        if result is None:
            with self.times.timed("detect"):
                result, state = self._detect(grey, prepared, small=factor != 1.0)
            if lost:
                result.note = f"tracking lost ({lost}); " + (result.note or "re-detected")
        if factor != 1.0 and result.success:
            result.points = unscale_points(result.points, factor)
            result.box = points_box(unscale_points(np.array(result.box).reshape(2, 2), factor))
        return result, state

    def _detect(self, grey: np.ndarray, prepared: np.ndarray, small: bool) -> tuple[FrameLandmarks, _TrackState | None]:
        whole_frame = small and (self.cfg.whole_frame_fallback or self.cfg.tight_crops)
        detections = [] if small and self.cfg.tight_crops else self._detections(grey, small)
        note = ""
        if detections:
            chosen = choose_face(detections, grey.shape, self.cfg.multi_face)
            box, confidence = chosen.box, chosen.confidence
        elif whole_frame and grey.std() >= MIN_CONTRAST:
            h, w = grey.shape[:2]
            box, confidence = (0.0, 0.0, float(w - 1), float(h - 1)), WHOLE_FRAME_CONFIDENCE
            note = "whole-frame box"
        else:
            return FrameLandmarks.failed("no face detected"), None
        points = np.asarray(self.predictor.predict(prepared, box), dtype=np.float32)
        if not detections:  # refine from a typical detector box around the first guess
            box = TYPICAL_CALIBRATION.box_for(points)
            points = np.asarray(self.predictor.predict(prepared, box), dtype=np.float32)
            # nothing vouches for the whole-frame box: the shape must at least be a face's
            problem = shape_problem(points, TEMPLATE, grey.shape)
            if problem:
                return FrameLandmarks.failed(f"no face detected (whole-frame box: {problem})"), None
        problem = landmark_problem(points, grey.shape)
        if problem:  # never track from points that cannot be a face
            return FrameLandmarks.failed(problem, n_faces=len(detections)), None
        state = _TrackState(
            points, points.copy(), BoxCalibration.fit(points, box), confidence, face_patch(grey, points), grey.shape
        )
        return FrameLandmarks(points, True, float(confidence), box, True, len(detections), note), state

    def _detections(self, grey: np.ndarray, small: bool) -> list[Detection]:
        """Detector output, boxes in ``grey``'s pixels. Small (upscaled) frames are searched as the module doc's
        "Small frames" says: unless ``small_frame_search='full'``, first at the face-crop scale (short side
        ``CROP_SEARCH_SCALE * min_face_px``), whose strong detections are kept, and with ``'crop_any'`` its weak
        ones too; otherwise on the whole work image. There strong detections win over weak ones; a weak one from
        the crop-scale search is used only when the full search finds nothing."""
        if not small:
            return self._detections_coarse_to_fine(grey)
        weak: list[Detection] = []
        scale = CROP_SEARCH_SCALE * self.cfg.min_face_px / min(grey.shape[:2])
        if self.cfg.small_frame_search != "full" and scale < 1.0:
            size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
            reduced = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            factor = np.array([size[0] / grey.shape[1], size[1] / grey.shape[0]])  # per axis (x, y)
            found = [
                Detection(points_box(unscale_points(np.reshape(d.box, (2, 2)), factor)), d.confidence)
                for d in self._padded_search(reduced)
            ]
            strong = [d for d in found if d.confidence >= STRONG_CONFIDENCE]
            if strong or (found and self.cfg.small_frame_search == "crop_any"):
                return strong or found
            weak = found
        found = self._padded_search(grey)
        strong = [d for d in found if d.confidence >= STRONG_CONFIDENCE]
        return strong or found or weak

    def _padded_search(self, grey: np.ndarray) -> list[Detection]:
        """Detections (boxes in ``grey``'s pixels, weak ones included) on ``grey`` with a replicated border of
        ``SMALL_FRAME_PAD`` of its long side, at the lowered threshold ``SMALL_FRAME_THRESHOLD``."""
        pad = round(SMALL_FRAME_PAD * max(grey.shape[:2]))
        padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        return [
            Detection((d.box[0] - pad, d.box[1] - pad, d.box[2] - pad, d.box[3] - pad), d.confidence)
            for d in self.detector.detect(padded, threshold=SMALL_FRAME_THRESHOLD)
        ]

    def _detections_coarse_to_fine(self, grey: np.ndarray) -> list[Detection]:
        """Detections on a copy at most ``detect_max_side`` pixels long (boxes mapped back), else at full size."""
        side = self.cfg.detect_max_side
        scale = side / max(grey.shape[:2]) if side else 1.0
        if scale < 1.0:
            size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
            small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            found = [Detection(tuple(v / scale for v in d.box), d.confidence) for d in self.detector.detect(small)]
            if found:
                return found
        return self.detector.detect(grey)

    def _track(self, grey: np.ndarray, prepared: np.ndarray, state: _TrackState) -> tuple[FrameLandmarks | None, str]:
        """Follow the face into this frame; (None, why) when it must be re-detected instead."""
        start_box = state.calibration.box_for(state.points)
        points = np.asarray(self.predictor.predict(prepared, start_box), dtype=np.float32)
        if not np.all(np.isfinite(points)):
            return None, "non-finite points"
        box = state.calibration.box_for(points)
        if box_drift(start_box, box) > self.cfg.max_drift:
            return None, "box drift"
        problem = shape_problem(points, state.reference, grey.shape)
        if problem:
            return None, problem
        patch = face_patch(grey, points)
        similarity = patch_similarity(patch, state.patch)
        if similarity < self.cfg.min_track_similarity:
            return None, f"appearance changed (similarity {similarity:.2f})"
        state.points, state.patch = points, patch
        state.since_detection += 1
        confidence = float(np.clip(state.confidence * similarity, 0.0, 1.0))
        return FrameLandmarks(points, True, confidence, box, False, 0), ""
