"""Piecewise-affine warping of a face image over a triangulation of its 68 landmarks plus anchors, and the
painted mouth interior.

The mesh vertices are the 68 landmarks, anchors on an ellipse around the head (they move with the head) and
fixed canvas-border points (the backdrop stays put). It is a Delaunay triangulation computed with the inner lips
slightly parted, so the mouth interior (polygon 60..67) is its own set of triangles: those are never warped (a
closed-mouth photo has no interior pixels) but painted when the mouth opens: a dark cavity, a teeth band whose
brightness follows the skin, a tongue for a wide opening.

Images are uint8, grey (H, W) or BGR (H, W, 3); points are (x, y) pixels, 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from data_manifests.demo import geometry as g
from stages import face_geometry as fg

N_HEAD_ANCHORS = 12
_MOUTH_EDGES = [(int(a), int(b)) for a, b in zip(fg.INNER_LIPS, np.roll(fg.INNER_LIPS, -1), strict=True)]


@dataclass(frozen=True)
class Mesh:
    """Triangles over the vertex array ``[68 landmarks, head anchors, border anchors]``.

    ``tris``: (K, 3) vertex indices, counter-clockwise in image coordinates of the neutral face;
    ``mouth``: (K,) bool, True for the mouth-interior triangles; ``n_head``: number of head anchors (they
    follow the head's similarity motion); the border anchors after them are fixed.
    """

    tris: np.ndarray
    mouth: np.ndarray
    n_head: int
    n_border: int


def head_anchors(pts: np.ndarray, size: tuple[int, int], margin: float) -> np.ndarray:
    """Points on an ellipse around an upright head (taller below the chin, so a jaw drop compresses the neck
    rather than pulling the frame), keeping those at least ``margin`` pixels inside the (width, height) canvas."""
    m = g.measure(pts)
    cx, cy = m.centre
    ang = np.linspace(0, 2 * np.pi, N_HEAD_ANCHORS, endpoint=False) + np.pi / N_HEAD_ANCHORS
    ax = 0.8 * m.face_w
    ay = np.where(np.sin(ang) > 0, 1.2 * m.face_h, 0.95 * m.face_h)
    ell = np.stack([cx + ax * np.cos(ang), cy + ay * np.sin(ang)], axis=1)
    w, h = size
    keep = (ell[:, 0] >= margin) & (ell[:, 0] <= w - 1 - margin) & (ell[:, 1] >= margin) & (ell[:, 1] <= h - 1 - margin)
    return ell[keep]


def border_anchors(size: tuple[int, int]) -> np.ndarray:
    """Fixed points on the canvas border: corners, edge midpoints and quarter points along top and bottom."""
    w, h = size[0] - 1, size[1] - 1
    xs = [0, w / 4, w / 2, 3 * w / 4, w]
    pts = [(x, 0) for x in xs] + [(x, h) for x in xs] + [(0, h / 2), (w, h / 2)]
    return np.array(pts, dtype=np.float64)


def parted(pts68: np.ndarray, amount: float) -> np.ndarray:
    """The landmarks with the inner lips moved apart by ``amount`` pixels each (for triangulation only)."""
    q = pts68.copy()
    q[fg.INNER_UPPER, 1] -= amount
    q[fg.INNER_LOWER, 1] += amount
    return q


def _crosses(p: np.ndarray, a: int, b: int, c: int, d: int) -> bool:
    """True when segments a-b and c-d of points ``p`` properly intersect (no shared endpoint)."""
    if len({a, b, c, d}) < 4:
        return False

    def orient(i: int, j: int, k: int) -> float:
        return float((p[j, 0] - p[i, 0]) * (p[k, 1] - p[i, 1]) - (p[j, 1] - p[i, 1]) * (p[k, 0] - p[i, 0]))

    return orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0


def _force_edge(p: np.ndarray, tris: list[list[int]], a: int, b: int, max_flips: int = 200) -> bool:
    """Insert edge a-b into a triangulation by flipping the edges that cross it (after Sloan 1993), preferring
    flips that remove a crossing, ties broken by a fixed-seed random order so cycles cannot persist. In place."""
    rng = np.random.default_rng(a * 1000 + b)
    for _ in range(max_flips):
        owners: dict[tuple[int, int], list[int]] = {}
        for k, t in enumerate(tris):
            for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                owners.setdefault((min(e), max(e)), []).append(k)
        if (min(a, b), max(a, b)) in owners:
            return True
        flips = []  # (new edge still crosses a-b, c, d, x, y, k0, k1) for convex quadrilaterals
        for (c, d), ks in owners.items():
            if len(ks) != 2 or not _crosses(p, a, b, c, d):
                continue
            x = next(v for v in tris[ks[0]] if v not in (c, d))
            y = next(v for v in tris[ks[1]] if v not in (c, d))
            if _crosses(p, x, y, c, d):
                flips.append((_crosses(p, a, b, x, y), rng.random(), c, d, x, y, ks[0], ks[1]))
        if not flips:
            return False
        _, _, c, d, x, y, k0, k1 = min(flips)  # prefer a flip that clears the crossing
        tris[k0] = [x, y, c]
        tris[k1] = [x, y, d]
    return False


def triangulate(pts68: np.ndarray, head: np.ndarray, border: np.ndarray) -> Mesh:
    """Delaunay mesh over landmarks + anchors with the mouth interior as its own triangles.

    The inner lips are parted by a pixel or two for the triangulation, and the mouth-polygon edges are forced
    into the mesh by edge flips where Delaunay misses them (thin lips). Raises ValueError if that fails.
    """
    m = g.measure(pts68)
    part = max(0.5, min(0.02 * m.iod, 0.3 * m.upper_lip, 0.3 * m.lower_lip))
    for grow in (1.0, 2.0, 4.0):
        verts = np.vstack([parted(pts68, part * grow), head, border])
        tris = [list(t) for t in Delaunay(verts).simplices.astype(int)]
        if all(_force_edge(verts, tris, a, b) for a, b in _MOUTH_EDGES):
            break
    else:
        raise ValueError("cannot triangulate the face with a separate mouth interior")
    arr = np.array(tris, dtype=np.int32)
    area = g.signed_areas(verts, arr)
    arr[area < 0] = arr[area < 0][:, [0, 2, 1]]
    arr = arr[np.abs(area) > 1e-9]
    poly = verts[fg.INNER_LIPS].astype(np.float32)
    inner = np.isin(arr, fg.INNER_LIPS).all(axis=1)
    centroids = verts[arr].mean(axis=1)
    inside = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) > 0 for x, y in centroids])
    return Mesh(tris=arr, mouth=inner & inside, n_head=len(head), n_border=len(border))


def warp(
    src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, mesh: Mesh, out: np.ndarray | None = None
) -> np.ndarray:
    """Piecewise-affine warp of ``src`` so that mesh vertices move from ``src_pts`` to ``dst_pts``.

    Triangles whose vertices do not move, and mouth-interior triangles, keep the ``src`` pixels (paint the
    mouth afterwards with :func:`paint_mouth`). Each triangle is warped inside its own bounding box only; the
    affine maps and boxes of all triangles are computed in one batch.
    """
    h, w = src.shape[:2]
    out = src.copy() if out is None else out
    moved = np.abs(dst_pts - src_pts).max(axis=1) > 1e-3
    sel = moved[mesh.tris].any(axis=1) & ~mesh.mouth
    sel &= np.abs(g.signed_areas(src_pts, mesh.tris)) > 1e-6
    tris = mesh.tris[sel]
    if len(tris) == 0:
        return out
    d = dst_pts[tris]  # (K, 3, 2)
    lo = np.maximum(np.floor(d.min(axis=1)).astype(int), 0)
    hi = np.minimum(np.ceil(d.max(axis=1)).astype(int) + 1, [w, h])
    local = d - lo[:, None, :]
    a = np.concatenate([src_pts[tris], np.ones((len(tris), 3, 1))], axis=2)  # rows [sx, sy, 1]
    mats = np.linalg.solve(a, local).transpose(0, 2, 1)  # (K, 2, 3): src -> dst box coordinates
    polys = np.round(local * 16).astype(np.int32)
    for k in range(len(tris)):
        (x0, y0), (x1, y1) = lo[k], hi[k]
        if x1 <= x0 or y1 <= y0:
            continue
        patch = cv2.warpAffine(
            src, mats[k], (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, polys[k], 1, lineType=cv2.LINE_8, shift=4)
        cv2.copyTo(patch, mask, out[y0:y1, x0:x1])
    return out


def skin_level(img: np.ndarray, pts68: np.ndarray) -> np.ndarray:
    """Median skin colour (1 value for grey, 3 for BGR, float) beside the nose and on the philtrum."""
    iod = float(np.linalg.norm(pts68[36] - pts68[45]))
    r = max(2, int(0.04 * iod))
    samples = []
    for p in (
        (pts68[31] + pts68[48]) / 2,
        (pts68[35] + pts68[54]) / 2,
        (pts68[33] + pts68[51]) / 2,
        (pts68[2] * 0.35 + pts68[31] * 0.65),
        (pts68[14] * 0.35 + pts68[35] * 0.65),
    ):
        x, y = int(round(p[0])), int(round(p[1]))
        patch = img[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1]
        if patch.size:
            samples.append(patch.reshape(-1, 1 if img.ndim == 2 else img.shape[2]))
    if not samples:
        return np.full(1 if img.ndim == 2 else 3, 128.0)
    return np.median(np.concatenate(samples), axis=0).astype(np.float64)


# colour factors relative to the skin (RGB order; grey uses their mean)
_CAVITY = np.array([0.2, 0.11, 0.11])
_TONGUE = np.array([0.5, 0.26, 0.26])
_TEETH = np.array([1.3, 1.26, 1.14])
_TEETH_MAX = 235.0


def _catmull_rom(p: np.ndarray, steps: int = 6) -> np.ndarray:
    """Open Catmull-Rom curve through the points ``p`` (N, 2), ends kept; (steps * (N - 1) + 1, 2)."""
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, steps, endpoint=False)[:, None]
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        out.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    out.append(p[-1:])
    return np.vstack(out)


def mouth_outline(pts68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth upper (60-61-62-63-64) and lower (60-67-66-65-64) inner-lip curves, sharp at the corners."""
    return _catmull_rom(pts68[[60, 61, 62, 63, 64]]), _catmull_rom(pts68[[60, 67, 66, 65, 64]])


def paint_mouth(img: np.ndarray, pts68: np.ndarray, skin: np.ndarray, min_area: float = 2.0) -> None:
    """Paint the open mouth (between the smoothed inner-lip curves of ``pts68``) into ``img`` in place.

    A dark cavity, an upper teeth band under the upper inner lip (most of a narrow opening, a band in a wide
    one, shaded towards the corners, faint gaps between teeth), lower teeth and a tongue when the mouth is wide
    open. Colours are the skin's colour times fixed factors (teeth capped), so they follow the lighting.
    """
    if g.polygon_area(pts68[fg.INNER_LIPS]) < min_area:
        return
    up, lo = mouth_outline(pts68)
    outline = np.vstack([up, lo[::-1][1:-1]])
    h, w = img.shape[:2]
    x0, y0 = np.floor(outline.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(outline.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    pw, ph = x1 - x0, y1 - y0
    mask = np.zeros((ph, pw), np.uint8)
    cv2.fillPoly(mask, [np.round((outline - (x0, y0)) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (3, 3), 0.6)

    up, lo = up - (x0, y0), lo - (x0, y0)
    xs = np.arange(pw, dtype=np.float64) + 0.5
    yu = np.interp(xs, *_monotone(up))
    yl = np.interp(xs, *_monotone(lo))
    gap = np.maximum(yl - yu, 0.0)
    mouth_w = float(np.linalg.norm(pts68[48] - pts68[54]))
    left, right = up[0, 0], up[-1, 0]
    centre = (left + right) / 2
    half = max((right - left) / 2, 1.0)
    across = np.clip(np.abs(xs - centre) / half, 0, 1)  # 0 centre .. 1 corner
    yy = np.arange(ph, dtype=np.float64)[:, None] + 0.5

    # teeth hang from the jaws, not from the lips: their biting edges are gentle arcs set by the opening at the
    # mouth's centre, so corners pulled down hide them and corners pulled up (a smile) show them
    c = int(np.clip(round(centre), 0, pw - 1))
    gap_c = float(gap[c])
    t_up = min((0.8 if gap_c < 0.12 * mouth_w else 0.55) * gap_c, 0.11 * mouth_w)
    edge_up = yu[c] + t_up - 0.5 * t_up * across**2
    t_lo = min(0.2 * gap_c, 0.05 * mouth_w) if gap_c > 0.09 * mouth_w else 0.0
    edge_lo = yl[c] - t_lo + 0.5 * t_lo * across**2
    teeth_u = np.maximum(edge_up - yu, 0.0) * (1 - across**6)
    in_upper = (yy >= yu - 0.5) & (yy < edge_up) & (across < 0.97)
    in_lower = (yy <= yl + 0.5) & (yy > edge_lo) & (across < 0.9) & (t_lo > 0)
    depth = np.clip((yy - yu) / np.maximum(gap, 1.0), 0, 1)
    # tongue: a soft ellipse resting on the lower teeth / lip when the mouth is wide open
    ty, ry, rx = yl[c] - 0.05 * gap_c, 0.3 * gap_c, 0.75 * half
    tongue_w = np.clip(1.5 * (1 - ((xs - centre) / rx) ** 2 - ((yy - ty) / max(ry, 1.0)) ** 2), 0, 1)
    tongue_w = tongue_w * float(np.clip((gap_c / mouth_w - 0.15) / 0.1, 0, 1))

    rgb = np.broadcast_to(_CAVITY, (ph, pw, 3)) * (1.0 - 0.35 * depth[..., None])
    rgb = rgb * (1 - tongue_w[..., None]) + _TONGUE * tongue_w[..., None]
    shade = (1.0 - 0.6 * across**2)[None, :]
    period = max(mouth_w / 9.0, 3.0)
    gaps = 1.0 - 0.12 * np.exp(-(((xs - centre) % period - period / 2) ** 2) / 0.8)[None, :]
    fade = np.clip((yy - yu) / np.maximum(teeth_u, 1.0), 0, 1)  # gum shadow at the top of the teeth
    upper_col = _TEETH * (shade * gaps * (0.82 + 0.18 * fade))[..., None]
    rgb = np.where(in_upper[..., None], upper_col, rgb)
    rgb = np.where(in_lower[..., None], _TEETH * 0.7 * shade[..., None], rgb)
    rgb = cv2.GaussianBlur(rgb.astype(np.float32), (3, 3), 0.8)

    region = img[y0:y1, x0:x1].astype(np.float32)
    if img.ndim == 2:
        paint = np.minimum(rgb.mean(axis=2) * float(skin[0]), _TEETH_MAX)
        a = alpha
    else:
        paint = np.minimum(rgb[..., ::-1] * skin.astype(np.float32)[None, None, :], _TEETH_MAX)  # BGR image
        a = alpha[..., None]
    img[y0:y1, x0:x1] = np.clip(region * (1 - a) + paint * a + 0.5, 0, 255).astype(np.uint8)


def _monotone(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a curve sorted by x, for np.interp (tiny back-steps of a spline near the corners dropped)."""
    order = np.argsort(curve[:, 0], kind="stable")
    return curve[order, 0], curve[order, 1]
