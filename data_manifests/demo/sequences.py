"""One subject's neutral face on a canvas, and one neutral-to-apex sequence of frames with its true landmarks.

A subject is a source photo placed upright on a canvas of the layout's size (face brow-to-chin height drawn from
the layout's range, a smooth backdrop behind a feathered portrait), optionally morphed (reused photos) and
neutralised (parted lips closed, smile levelled). A sequence starts at that neutral face (frame 0 is unwarped)
and eases into an expression's apex at its last frame, with slight head motion (a similarity drift), lighting
gain/offset and sensor noise.

Randomness: a subject's look comes from ``default_rng([seed, 2, subject_index])``, a sequence's from
``default_rng([seed, 1, sequence_index])``, so results do not depend on worker count or order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_manifests.demo import action_units as au
from data_manifests.demo import geometry as g
from data_manifests.demo import prototypes as proto
from data_manifests.demo import shading
from data_manifests.demo import warp as wp
from data_manifests.demo.faces import SubjectFace
from stages import face_geometry as fg


@dataclass(frozen=True)
class Canvas:
    """Frame size (pixels), grey or BGR, and the range of the face's brow-to-chin height in pixels."""

    width: int
    height: int
    grey: bool
    face_h: tuple[float, float]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class SubjectStyle:
    """Per-subject constants: placement, lighting, noise, how strongly and how fast they emote, head motion."""

    face_h: float
    offset: tuple[float, float]
    gain: float
    bias: float
    noise: float
    expressiveness: float
    speed: float
    motion: float
    backdrop: tuple[float, float]
    backdrop_seed: int
    morph: tuple[float, ...]
    au_gains: tuple[float, ...]


@dataclass
class SubjectBase:
    """A subject's neutral canvas image (uint8 grey or BGR), its landmarks (68, 2), anchors and mesh."""

    image: np.ndarray
    landmarks: np.ndarray
    head: np.ndarray
    border: np.ndarray
    mesh: wp.Mesh
    measures: g.FaceMeasures
    skin: np.ndarray

    @property
    def vertices(self) -> np.ndarray:
        return np.vstack([self.landmarks, self.head, self.border])


def subject_style(seed: int, subject_index: int, canvas: Canvas, morph: bool) -> SubjectStyle:
    """Draw a subject's constants (see :class:`SubjectStyle`); ``morph`` adds a random face-shape change."""
    rng = np.random.default_rng([seed, 2, subject_index])
    scale = canvas.height / 490
    return SubjectStyle(
        face_h=float(rng.uniform(*canvas.face_h)),
        offset=(float(rng.uniform(-30, 30) * scale), float(rng.uniform(-12, 12) * scale)),
        gain=float(rng.uniform(0.82, 1.15)),
        bias=float(rng.uniform(-14, 14)),
        noise=float(rng.uniform(0.8, 2.4)),
        expressiveness=float(rng.uniform(0.85, 1.15)),
        speed=float(rng.uniform(1.3, 2.6)),
        motion=float(rng.uniform(0.3, 1.0)),
        backdrop=(float(rng.uniform(0.35, 0.8)), float(rng.uniform(-0.12, 0.12))),
        backdrop_seed=int(rng.integers(2**31)),
        morph=tuple(float(v) for v in rng.uniform(-1, 1, size=6)) if morph else (),
        au_gains=proto.subject_au_gains(rng),
    )


# ---------------------------------------------------------------------------------------------- subject


def _backdrop(canvas: Canvas, style: SubjectStyle, photo: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """What shows where the photo does not reach: the photo's colours smeared outward (a normalised blur of the
    valid pixels), pulled toward a studio-grey level, with a vertical gradient and low-frequency blotches.
    float32 (H, W, C)."""
    rng = np.random.default_rng(style.backdrop_seed)
    h, w = canvas.height, canvas.width
    small = (max(w // 16, 4), max(h // 16, 4))
    num = cv2.resize(photo * valid[..., None], small, interpolation=cv2.INTER_AREA).reshape(small[1], small[0], -1)
    den = cv2.resize(valid, small, interpolation=cv2.INTER_AREA)[..., None]
    k = (0, 0)
    num = cv2.GaussianBlur(num, k, 3.0).reshape(small[1], small[0], -1)
    den = cv2.GaussianBlur(den, k, 3.0).reshape(small[1], small[0], 1)
    mean = (num.reshape(-1, num.shape[2]).sum(0) / max(float(den.sum()), 1e-6)).astype(np.float32)
    ext = (num + 1e-3 * mean) / (den + 1e-3)
    ext = cv2.resize(ext, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, -1)
    level = 0.5 * mean + 0.5 * style.backdrop[0] * 255
    ramp = (1 + style.backdrop[1] * np.linspace(-1, 1, h, dtype=np.float32))[:, None, None]
    blotch = cv2.resize(rng.normal(0, 1, (4, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    studio = ramp * (1 + 0.05 * blotch[..., None]) * level[None, None, :]
    return 0.55 * ext + 0.45 * studio


def _padding_mask(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """float32 mask, 0 on black padding of a rotated or padded crop, else 1.

    Padding is near-black area connected to the image border that stays away from the head; a dark background
    that reaches the head (hair, face outline) is kept as the photo's own.
    """
    grey = img if img.ndim == 2 else img.max(axis=2)
    h, w = grey.shape
    work = (grey <= 4).astype(np.uint8)
    fill = np.zeros((h + 2, w + 2), np.uint8)
    seeds = [(x, y) for x in (0, w - 1) for y in range(0, h, 4)] + [(x, y) for y in (0, h - 1) for x in range(0, w, 4)]
    for x, y in seeds:
        if work[y, x] == 1:
            cv2.floodFill(work, fill, (x, y), 2, loDiff=0, upDiff=0, flags=4)
    n, comp = cv2.connectedComponents((work == 2).astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.ones((h, w), np.float32)
    centre = pts.mean(axis=0)
    head = np.zeros((h, w), np.uint8)
    hull = pts[cv2.convexHull(pts.astype(np.float32), returnPoints=False)[:, 0]]
    cv2.fillConvexPoly(head, np.round(centre + 1.45 * (hull - centre)).astype(np.int32), 1)
    mask = np.ones((h, w), np.float32)
    for k in range(1, n):
        region = comp == k
        if not (region & head.astype(bool)).any():
            mask[region] = 0.0
    return mask


def _morph_displacement(pts: np.ndarray, m: g.FaceMeasures, coeffs: tuple[float, ...]) -> np.ndarray:
    """A plausible identity change (face width, jaw length, eye spacing, mouth width, nose length, brow height),
    coefficients in [-1, 1]."""
    d = np.zeros_like(pts)
    if not coeffs:
        return d
    cx = m.centre[0]
    fw, jl, es, mw, nl, bh = coeffs
    d[fg.JAW, 0] += (pts[fg.JAW, 0] - cx) * 0.06 * fw
    jaw_w = np.clip((pts[fg.JAW, 1] - pts[30, 1]) / max(pts[8, 1] - pts[30, 1], 1e-6), 0, 1)
    d[fg.JAW, 1] += 0.07 * jl * m.iod * jaw_w
    d[[*fg.RIGHT_EYE, 17, 18, 19, 20, 21], 0] -= 0.03 * es * m.iod
    d[[*fg.LEFT_EYE, 22, 23, 24, 25, 26], 0] += 0.03 * es * m.iod
    mouth = np.r_[fg.OUTER_LIPS, fg.INNER_LIPS]
    mcx = pts[mouth, 0].mean()
    d[mouth, 0] += (pts[mouth, 0] - mcx) * 0.08 * mw
    d[[31, 32, 33, 34, 35], 1] += 0.04 * nl * m.iod
    d[mouth, 1] += 0.025 * nl * m.iod
    d[fg.BROWS, 1] -= 0.04 * bh * m.iod
    return d


def pull_back(
    verts: np.ndarray,
    disp: np.ndarray,
    mesh: wp.Mesh,
    fractions=(0.25, 0.5, 0.75, 1.0),
    min_ratio: float = 0.12,
    max_iter: int = 30,
) -> np.ndarray:
    """Shrink the displacement of vertices whose (non-mouth) triangle would flip or collapse below
    ``min_ratio`` of its area at any of ``fractions`` of the way. ``disp`` covers the first len(disp) vertices."""
    disp = disp.copy()
    n = len(disp)
    tris = mesh.tris[~mesh.mouth]
    base = g.signed_areas(verts, tris)
    for _ in range(max_iter):
        bad = np.zeros(len(tris), bool)
        for f in fractions:
            moved = verts.copy()
            moved[:n] += f * disp
            bad |= g.signed_areas(moved, tris) < min_ratio * base
        if not bad.any():
            return disp
        idx = np.unique(tris[bad])
        idx = idx[idx < n]
        if idx.size == 0:
            break
        disp[idx] *= 0.8
    return disp


def build_subject(face: SubjectFace, canvas: Canvas, style: SubjectStyle) -> SubjectBase:
    """Place ``face`` upright on the canvas, morph/neutralise it, and mesh it (see module doc)."""
    img, pts = face.face.image, face.face.landmarks.copy()
    if face.variant % 2 == 1:
        img = np.ascontiguousarray(img[:, ::-1])
        pts = fg.mirror_points(pts, img.shape[1])
    img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None] if canvas.grey else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    upright = fg.transform_points(pts, g.similarity(g.roll_degrees(pts), 1.0, tuple(pts.mean(0)), (0, 0)))
    m0 = g.measure(upright)
    scale = style.face_h / m0.face_h
    # face centre of the photo (in photo pixels), to go to the canvas target
    centre = tuple(
        fg.transform_points(
            np.array([m0.centre]),
            cv2.invertAffineTransform(g.similarity(g.roll_degrees(pts), 1.0, tuple(pts.mean(0)), (0, 0))),
        )[0]
    )
    target = (canvas.width / 2 + style.offset[0], canvas.height * 0.46 + style.offset[1])
    mat = g.similarity(g.roll_degrees(pts), scale, centre, (target[0] - centre[0], target[1] - centre[1]))
    size = canvas.size
    photo = cv2.warpAffine(img, mat, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    photo = photo.reshape(canvas.height, canvas.width, -1).astype(np.float32)
    valid = cv2.warpAffine(
        _padding_mask(img[..., 0] if canvas.grey else img, pts),
        mat,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    lm = fg.transform_points(pts, mat)
    m = g.measure(lm)
    # feathered portrait: the photo's own edges, and an oval around head and shoulders
    feather = max(3, int(0.08 * style.face_h)) | 1
    valid = cv2.GaussianBlur(cv2.erode(valid, np.ones((feather, feather), np.uint8)), (0, 0), feather / 2)
    yy, xx = np.mgrid[0 : canvas.height, 0 : canvas.width].astype(np.float32)
    ry = np.where(yy < m.centre[1], 1.35 * m.face_h, 2.6 * m.face_h)
    r = np.sqrt(((xx - m.centre[0]) / (1.35 * m.face_w)) ** 2 + ((yy - m.centre[1]) / ry) ** 2)
    oval = np.clip((1.15 - r) / 0.3, 0, 1)
    alpha = (valid * oval)[..., None]
    backdrop = _backdrop(canvas, style, photo, (valid > 0.99).astype(np.float32))
    image = np.clip(photo * alpha + backdrop * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    if canvas.grey:
        image = image[..., 0]

    margin = 0.05 * min(size)
    head = wp.head_anchors(lm, size, margin)
    border = wp.border_anchors(size)
    mesh = wp.triangulate(lm, head, border)
    shape_change = _morph_displacement(lm, m, style.morph) + au.neutralise(lm, m)
    if np.abs(shape_change).max() > 0.05:
        verts = np.vstack([lm, head, border])
        shape_change = pull_back(verts, shape_change, mesh, fractions=(1.0,))
        dst = verts.copy()
        dst[:68] += shape_change
        image = wp.warp(image, verts, dst, mesh)
        lm = dst[:68]
        m = g.measure(lm)
        head = wp.head_anchors(lm, size, margin)
        mesh = wp.triangulate(lm, head, border)
    return SubjectBase(
        image=image, landmarks=lm, head=head, border=border, mesh=mesh, measures=m, skin=wp.skin_level(image, lm)
    )


# ---------------------------------------------------------------------------------------------- sequence


@dataclass
class RenderedSequence:
    """Frames (uint8 grey (H, W) or BGR (H, W, 3)), true landmarks (T, 68, 2) float64, and the expression."""

    frames: list[np.ndarray]
    landmarks: np.ndarray
    expression: proto.Expression


def easing(n_frames: int, rng: np.random.Generator, speed: float) -> np.ndarray:
    """Expression weight per frame: 0 at frame 0 (neutral), 1 at the last frame (apex), a smooth rise between
    with a random neutral hold at the start and apex hold at the end."""
    t = np.linspace(0.0, 1.0, n_frames)
    delay, hold = rng.uniform(0.0, 0.2), rng.uniform(0.0, 0.15)
    x = np.clip((t - delay) / (1.0 - delay - hold), 0.0, 1.0)
    a = speed * rng.uniform(0.8, 1.2)
    e = x**a / (x**a + (1 - x) ** a)
    e[0], e[-1] = 0.0, 1.0
    return e


def head_motion(n_frames: int, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """(T, 4) per-frame head pose offsets (angle degrees, scale-1, dx, dy in face heights); zero at frame 0."""
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    end = rng.normal(0, 1, 4) * np.array([1.2, 0.01, 0.012, 0.01]) * amplitude
    wob = rng.normal(0, 1, 4) * np.array([0.5, 0.004, 0.006, 0.005]) * amplitude
    phase = rng.uniform(0, 2 * np.pi, 4)
    freq = rng.uniform(0.5, 1.5, 4)
    drift = end * (3 * t**2 - 2 * t**3)
    wobble = wob * (np.sin(2 * np.pi * freq * t + phase) - np.sin(phase))
    return drift + wobble


def _pose_matrix(pose: np.ndarray, centre: tuple[float, float], face_h: float) -> np.ndarray:
    return g.similarity(pose[0], 1.0 + pose[1], centre, (pose[2] * face_h, pose[3] * face_h))


def render_sequence(
    base: SubjectBase, style: SubjectStyle, expr: proto.Expression, n_frames: int, rng: np.random.Generator
) -> RenderedSequence:
    """Frames from the neutral base (frame 0 unwarped) to ``expr``'s apex (last frame), see module doc."""
    lm0, m = base.landmarks, base.measures
    verts = base.vertices
    disp = au.constrain(lm0, expr.displacement(m), m)
    disp = pull_back(verts, disp, base.mesh)
    weights = easing(n_frames, rng, style.speed)
    poses = head_motion(n_frames, rng, style.motion)
    tris = base.mesh.tris[~base.mesh.mouth]
    ref = g.signed_areas(verts, tris)
    n_lm, n_head = 68, len(base.head)
    for _ in range(6):  # shrink head motion until no background triangle folds
        ok = True
        for k in range(n_frames):
            dst = _frame_vertices(verts, disp, weights[k], _pose_matrix(poses[k], m.centre, m.face_h), n_lm, n_head)
            if (g.signed_areas(dst, tris) < 0.12 * ref).any():
                ok = False
                break
        if ok:
            break
        poses *= 0.5
    cues = shading.strengths(expr)
    gain = style.gain * rng.uniform(0.96, 1.04)
    bias = style.bias + rng.uniform(-4, 4)
    frames, marks = [], np.zeros((n_frames, 68, 2))
    for k in range(n_frames):
        mat = _pose_matrix(poses[k], m.centre, m.face_h)
        dst = _frame_vertices(verts, disp, weights[k], mat, n_lm, n_head)
        frame = base.image.copy() if k == 0 else wp.warp(base.image, verts, dst, base.mesh)
        if k > 0:
            wp.paint_mouth(frame, dst[:68], base.skin)
            shading.apply_shading(frame, dst[:68], cues, weights[k])
        frames.append(_expose(frame, gain, bias, style.noise, int(rng.integers(2**31))))
        marks[k] = dst[:68]
    return RenderedSequence(frames=frames, landmarks=marks, expression=expr)


def _expose(frame: np.ndarray, gain: float, bias: float, noise: float, noise_seed: int) -> np.ndarray:
    """Lighting gain/offset and Gaussian sensor noise (sigma ``noise`` grey levels), rounded to uint8.

    The noise comes from OpenCV's generator seeded per frame (much faster than numpy's, and as deterministic).
    """
    x = frame.astype(np.float32)
    x *= gain
    x += bias + 0.5
    n = np.empty_like(x)
    cv2.setRNGSeed(noise_seed)
    cv2.randn(n, 0.0, noise)
    x += n
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _frame_vertices(
    verts: np.ndarray, disp: np.ndarray, weight: float, mat: np.ndarray, n_lm: int, n_head: int
) -> np.ndarray:
    dst = verts.copy()
    dst[:n_lm] += weight * disp
    dst[: n_lm + n_head] = fg.transform_points(dst[: n_lm + n_head], mat)
    return dst
