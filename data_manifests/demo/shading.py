"""Expression wrinkles and bulges a pure landmark warp cannot make: shading drawn along the current landmarks.

Nasolabial folds deepen with AU12/AU6/AU10/AU9/AU14 (smile, sneer, contempt on one side) with a cheek bulge
highlight above them (AU6); vertical furrows between the brows with AU4; horizontal forehead lines with
AU1+AU2; short wrinkles across the nose bridge with AU9. Strengths scale with the action-unit amounts and the
frame's expression weight, so frame 0 (weight 0) is untouched.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_manifests.demo.prototypes import Expression


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def strengths(expr: Expression) -> dict[str, float | tuple[float, float]]:
    """Apex strengths (0..~1.3) of each shading cue for an expression; folds and cheeks per image side."""
    a = expr.aus
    folds = 1.0 * a.get(12, 0) + 0.35 * a.get(6, 0) + 0.6 * a.get(10, 0) + 0.5 * a.get(9, 0)
    side_fold = 0.9 * a.get(14, 0)
    left = min(folds + side_fold * expr.sides[0], 1.3) if a.get(14) else min(folds, 1.3)
    right = min(folds + side_fold * expr.sides[1], 1.3) if a.get(14) else min(folds, 1.3)
    cheek = min(a.get(6, 0) + 0.3 * a.get(12, 0), 1.3)
    return {
        "folds": (left, right),
        "cheeks": (cheek, cheek),
        "glabella": min(a.get(4, 0), 1.3),
        "forehead": min((a.get(1, 0) + a.get(2, 0)) / 2, 1.3),
        "nose": min(a.get(9, 0), 1.3),
    }


def apply_shading(img: np.ndarray, lm: np.ndarray, cues: dict, weight: float) -> None:
    """Darken wrinkles / brighten bulges of ``cues`` (from :func:`strengths`) times ``weight`` into ``img``
    (uint8 grey or BGR) in place, around the face of landmarks ``lm`` (68, 2)."""
    if weight <= 0:
        return
    u = float(np.linalg.norm(lm[36] - lm[45]))
    h, w = img.shape[:2]
    x0, y0 = np.floor(lm.min(axis=0) - 0.35 * u).astype(int)
    x1, y1 = np.ceil(lm.max(axis=0) + 0.1 * u).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    layers = _Layers(x0, y0, x1, y1, u)
    _draw_folds_and_cheeks(layers, lm, cues, weight)
    _draw_lines(layers, lm, cues, weight)
    layers.blend_into(img)


class _Layers:
    """A darkening and a brightening layer (float32, 0 = unchanged) over the face's box ``x0:x1, y0:y1`` of the
    image; ``u`` is the eye-corner distance in pixels, the unit of every size."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int, u: float) -> None:
        self.x0, self.y0, self.x1, self.y1, self.u = x0, y0, x1, y1, u
        self.off = np.array([x0, y0], dtype=np.float64)
        self.dark = np.zeros((y1 - y0, x1 - x0), np.float32)
        self.light = np.zeros_like(self.dark)
        self.thick = max(1, int(round(0.022 * u)))

    def line(self, pts: np.ndarray, level: float, width: int | None = None) -> None:
        """An anti-aliased polyline through image points ``pts`` [N, 2] darkening by ``level`` (0 draws nothing)."""
        if level > 0:
            layer = np.zeros_like(self.dark)
            cv2.polylines(
                layer,
                [np.round((pts - self.off) * 16).astype(np.int32)],
                False,
                float(level),
                self.thick if width is None else width,
                lineType=cv2.LINE_AA,
                shift=4,
            )
            np.maximum(self.dark, layer, out=self.dark)

    def bulge(self, centre: np.ndarray, axes: tuple[int, int], level: float) -> None:
        """A filled, anti-aliased ellipse at image point ``centre`` brightening by ``level``."""
        cx, cy = int(centre[0] - self.x0), int(centre[1] - self.y0)
        cv2.ellipse(self.light, (cx, cy), axes, 0, 0, 360, level, -1, lineType=cv2.LINE_AA)

    def blend_into(self, img: np.ndarray) -> None:
        """Blur both layers and apply them to the box of ``img`` in place."""
        sigma = max(0.6, 0.012 * self.u)
        dark = cv2.GaussianBlur(self.dark, (0, 0), sigma)
        light = cv2.GaussianBlur(self.light, (0, 0), 3 * sigma)
        gain = (1.0 - dark) * (1.0 + light)
        y0, y1, x0, x1 = self.y0, self.y1, self.x0, self.x1
        region = img[y0:y1, x0:x1].astype(np.float32)
        region *= gain if img.ndim == 2 else gain[..., None]
        img[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def _draw_folds_and_cheeks(layers: _Layers, lm: np.ndarray, cues: dict, weight: float) -> None:
    """Nasolabial folds from beside the nose to below the mouth corners, a cheek bulge above each."""
    u = layers.u
    for side, (nose_pt, corner, sign) in enumerate(((31, 48, -1.0), (35, 54, 1.0))):
        s = cues["folds"][side] * weight
        out = np.array([sign, 0.0])
        p0 = lm[nose_pt] + u * (0.1 * out + np.array([0, -0.03]))
        p2 = lm[corner] + u * (0.07 * out + np.array([0, 0.08]))
        p1 = (p0 + p2) / 2 + u * 0.06 * out
        layers.line(_bezier(p0, p1, p2), 0.28 * s, width=layers.thick + 1)
        c = cues["cheeks"][side] * weight
        if c > 0:
            centre = (p1 + lm[40 if side == 0 else 47] + u * 0.12 * out) / 2 + u * np.array([0.0, 0.04])
            layers.bulge(centre, (int(0.14 * u), int(0.1 * u)), 0.07 * c)


def _draw_lines(layers: _Layers, lm: np.ndarray, cues: dict, weight: float) -> None:
    """Vertical furrows between the brows, horizontal forehead lines, short wrinkles across the nose bridge."""
    u = layers.u
    g = cues["glabella"] * weight
    if g > 0:
        gap = lm[22, 0] - lm[21, 0]
        for fx in (0.3, 0.7):
            x = lm[21, 0] + fx * gap
            top, bottom = min(lm[21, 1], lm[22, 1]) - 0.12 * u, min(lm[21, 1], lm[22, 1]) + 0.04 * u
            layers.line(np.array([[x + (fx - 0.5) * 0.05 * u, top], [x, bottom]]), 0.25 * g)
    f = cues["forehead"] * weight
    if f > 0:
        brow_top = lm[17:27, 1].min()
        for k in (1, 2, 3):
            y = brow_top - k * 0.075 * u
            pts = np.array([[lm[18, 0], y + 0.02 * u], [(lm[18, 0] + lm[25, 0]) / 2, y], [lm[25, 0], y + 0.02 * u]])
            layers.line(_bezier(pts[0], pts[1], pts[2]), 0.16 * f / k**0.5)
    n = cues["nose"] * weight
    if n > 0:
        for k, fy in enumerate((0.35, 0.55)):
            y = lm[27, 1] + fy * (lm[30, 1] - lm[27, 1])
            half = (0.09 - 0.02 * k) * u
            bridge = np.array([[lm[28, 0] - half, y + 0.02 * u], [lm[28, 0], y], [lm[28, 0] + half, y + 0.02 * u]])
            layers.line(bridge, 0.22 * n)
