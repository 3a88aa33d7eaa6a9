"""Action-unit-like landmark moves for an upright face, and the limits that keep lids and lips valid.

Every displacement is a (68, 2) array of pixel offsets for an *upright* face (eye line horizontal, y down),
scaled by that face's own sizes (:class:`~data_manifests.demo.geometry.FaceMeasures`): brow and cheek moves by
the outer-eye distance, lid moves by the eye height, lip-thickness moves by the lip thickness. So a narrow eye
is never closed past its lids and a thin lip is never pressed through itself.
"""

from __future__ import annotations

import numpy as np

from data_manifests.demo import geometry as g
from stages import face_geometry as fg

# A row moves a mirrored pair of point groups: (image-left indices, image-right indices, unit, out, up).
# ``out`` is away from the face midline, ``up`` against image y; both in multiples of the unit:
# "u" outer-eye distance, "eh" that side's eye height, "ul"/"ll" upper/lower lip thickness.
# A row whose right indices are empty moves centre points (``out`` ignored).
Row = tuple[tuple[int, ...], tuple[int, ...], str, float, float]

AU_ROWS: dict[int, list[Row]] = {
    1: [  # inner brow raiser
        ((21,), (22,), "u", 0.0, 0.105),
        ((20,), (23,), "u", 0.0, 0.075),
        ((19,), (24,), "u", 0.0, 0.04),
        ((18,), (25,), "u", 0.0, 0.015),
    ],
    2: [  # outer brow raiser
        ((17,), (26,), "u", 0.0, 0.085),
        ((18,), (25,), "u", 0.0, 0.09),
        ((19,), (24,), "u", 0.0, 0.07),
        ((20,), (23,), "u", 0.0, 0.04),
        ((21,), (22,), "u", 0.0, 0.015),
    ],
    4: [  # brow lowerer: down and together
        ((21,), (22,), "u", -0.04, -0.075),
        ((20,), (23,), "u", -0.025, -0.065),
        ((19,), (24,), "u", -0.01, -0.045),
        ((18,), (25,), "u", 0.0, -0.025),
        ((17,), (26,), "u", 0.0, -0.01),
        ((38,), (43,), "eh", 0.0, -0.12),
        ((37,), (44,), "eh", 0.0, -0.06),
    ],
    5: [  # upper lid raiser
        ((37, 38), (43, 44), "eh", 0.0, 0.5),
        ((36,), (45,), "eh", 0.0, 0.04),
        ((39,), (42,), "eh", 0.0, 0.03),
        ((40, 41), (46, 47), "eh", 0.0, -0.06),
    ],
    6: [  # cheek raiser: lower lids up, eye narrows, cheeks lift
        ((40, 41), (46, 47), "eh", 0.0, 0.32),
        ((36,), (45,), "eh", 0.02, 0.12),
        ((37, 38), (43, 44), "eh", 0.0, -0.06),
        ((1,), (15,), "u", 0.0, 0.02),
        ((2,), (14,), "u", 0.01, 0.02),
        ((3,), (13,), "u", 0.01, 0.012),
    ],
    7: [  # lid tightener
        ((40, 41), (46, 47), "eh", 0.0, 0.38),
        ((37, 38), (43, 44), "eh", 0.0, -0.16),
        ((36,), (45,), "eh", -0.02, 0.05),
        ((39,), (42,), "eh", 0.0, 0.04),
    ],
    9: [  # nose wrinkler
        ((31,), (35,), "u", 0.02, 0.055),
        ((32,), (34,), "u", 0.008, 0.05),
        ((33,), (), "u", 0.0, 0.04),
        ((30,), (), "u", 0.0, 0.018),
        ((29,), (), "u", 0.0, 0.006),
        ((21,), (22,), "u", -0.02, -0.045),
        ((20,), (23,), "u", -0.01, -0.025),
        ((40, 41), (46, 47), "eh", 0.0, 0.22),
        ((39,), (42,), "eh", 0.0, 0.08),
        ((50,), (52,), "u", 0.0, 0.035),
        ((51,), (), "u", 0.0, 0.035),
        ((61,), (63,), "u", 0.0, 0.025),
        ((62,), (), "u", 0.0, 0.025),
    ],
    10: [  # upper lip raiser (shows the upper teeth)
        ((50,), (52,), "ul", 0.0, 0.55),
        ((51,), (), "ul", 0.0, 0.5),
        ((49,), (53,), "ul", 0.0, 0.42),
        ((61,), (63,), "ul", 0.0, 0.75),
        ((62,), (), "ul", 0.0, 0.7),
        ((48,), (54,), "ul", 0.0, 0.12),
        ((60,), (64,), "ul", 0.0, 0.2),
        ((31,), (35,), "u", 0.015, 0.025),
        ((32,), (34,), "u", 0.0, 0.015),
    ],
    12: [  # lip corner puller: corners out and up
        ((48,), (54,), "u", 0.11, 0.095),
        ((60,), (64,), "u", 0.1, 0.088),
        ((49,), (53,), "u", 0.055, 0.055),
        ((59,), (55,), "u", 0.065, 0.06),
        ((50,), (52,), "u", 0.02, 0.025),
        ((58,), (56,), "u", 0.025, 0.025),
        ((61,), (63,), "u", 0.045, 0.045),
        ((67,), (65,), "u", 0.045, 0.04),
        ((51,), (), "u", 0.0, 0.01),
        ((62,), (), "u", 0.0, 0.012),
        ((57,), (), "u", 0.0, 0.012),
        ((66,), (), "u", 0.0, 0.012),
        ((3,), (13,), "u", 0.012, 0.01),
        ((4,), (12,), "u", 0.008, 0.006),
    ],
    14: [  # dimpler (used unilaterally for contempt): corner tightened back and up
        ((48,), (54,), "u", 0.085, 0.05),
        ((60,), (64,), "u", 0.08, 0.048),
        ((49,), (53,), "u", 0.035, 0.025),
        ((59,), (55,), "u", 0.04, 0.028),
        ((61,), (63,), "u", 0.025, 0.02),
        ((67,), (65,), "u", 0.025, 0.018),
        ((3,), (13,), "u", 0.01, 0.008),
    ],
    15: [  # lip corner depressor
        ((48,), (54,), "u", -0.015, -0.085),
        ((60,), (64,), "u", -0.012, -0.075),
        ((59,), (55,), "u", 0.0, -0.045),
        ((49,), (53,), "u", 0.0, -0.035),
        ((58,), (56,), "u", 0.0, -0.015),
        ((67,), (65,), "u", 0.0, -0.03),
        ((61,), (63,), "u", 0.0, -0.02),
    ],
    17: [  # chin raiser: lower lip and chin pushed up
        ((56, 58), (), "u", 0.0, 0.03),
        ((57,), (), "u", 0.0, 0.035),
        ((65, 66, 67), (), "u", 0.0, 0.02),
        ((7, 9), (), "u", 0.0, 0.035),
        ((8,), (), "u", 0.0, 0.04),
        ((6, 10), (), "u", 0.0, 0.02),
        ((48,), (54,), "u", 0.0, -0.012),
    ],
    20: [  # lip stretcher: corners sideways, slightly down
        ((48,), (54,), "u", 0.1, -0.02),
        ((60,), (64,), "u", 0.095, -0.018),
        ((49,), (53,), "u", 0.05, -0.008),
        ((59,), (55,), "u", 0.05, -0.012),
        ((50,), (52,), "u", 0.018, 0.0),
        ((58,), (56,), "u", 0.018, -0.005),
        ((61,), (63,), "u", 0.035, 0.0),
        ((67,), (65,), "u", 0.035, -0.004),
        ((4,), (12,), "u", 0.01, 0.0),
        ((5,), (11,), "u", 0.006, 0.0),
    ],
    23: [  # lip tightener: narrower, thinner lips
        ((48,), (54,), "u", -0.04, 0.0),
        ((60,), (64,), "u", -0.035, 0.0),
        ((49,), (53,), "u", -0.02, 0.0),
        ((59,), (55,), "u", -0.02, 0.0),
        ((50, 51, 52), (), "ul", 0.0, -0.25),
        ((56, 57, 58), (), "ll", 0.0, 0.22),
    ],
    24: [  # lip presser
        ((50, 51, 52), (), "ul", 0.0, -0.32),
        ((49,), (53,), "ul", 0.0, -0.22),
        ((56, 57, 58), (), "ll", 0.0, 0.32),
        ((59,), (55,), "ll", 0.0, 0.22),
        ((48,), (54,), "u", -0.01, 0.0),
        ((7, 8, 9), (), "u", 0.0, 0.012),
    ],
}

# Jaw drop (AU26/27, with AU25 lips parted) is parametrised by the opening in outer-eye distances.
_JAW_WEIGHTS = {
    8: 1.0,
    7: 0.96,
    9: 0.96,
    6: 0.86,
    10: 0.86,
    5: 0.68,
    11: 0.68,
    4: 0.47,
    12: 0.47,
    3: 0.27,
    13: 0.27,
    2: 0.11,
    14: 0.11,
    1: 0.03,
    15: 0.03,
}
_LOWER_LIP_WEIGHTS = {57: 1.0, 66: 1.0, 56: 0.9, 58: 0.9, 65: 0.84, 67: 0.84, 55: 0.68, 59: 0.68}


def jaw_drop(meas: g.FaceMeasures, amount: float, narrow: float = 0.2) -> np.ndarray:
    """Open the mouth by ``amount`` outer-eye distances: lower lip and chin down, corners down and in
    (``narrow``: inward corner move per unit of drop, for the O-shaped surprise mouth)."""
    d = np.zeros((fg.N_POINTS, 2))
    drop = amount * meas.iod
    for i, w in _JAW_WEIGHTS.items():
        d[i, 1] += w * drop
    for i, w in _LOWER_LIP_WEIGHTS.items():
        d[i, 1] += w * drop
    d[[48, 60], 0] += narrow * drop
    d[[54, 64], 0] -= narrow * drop
    d[[48, 54], 1] += 0.26 * drop
    d[[60, 64], 1] += 0.28 * drop
    d[[61, 62, 63], 1] -= 0.03 * drop
    d[[4, 5], 0] += 0.04 * drop
    d[[12, 11], 0] -= 0.04 * drop
    return d


def lips_part(meas: g.FaceMeasures, amount: float) -> np.ndarray:
    """AU25: part the lips by ``amount`` outer-eye distances without moving the jaw much."""
    d = np.zeros((fg.N_POINTS, 2))
    gap = amount * meas.iod
    d[[65, 66, 67], 1] += 0.75 * gap
    d[[61, 62, 63], 1] -= 0.25 * gap
    d[[55, 56, 57, 58, 59], 1] += 0.55 * gap
    d[[49, 50, 51, 52, 53], 1] -= 0.15 * gap
    d[[7, 8, 9], 1] += 0.25 * gap
    return d


def _unit(meas: g.FaceMeasures, unit: str, side: int) -> float:
    return {"u": meas.iod, "eh": meas.eye_h[side], "ul": meas.upper_lip, "ll": meas.lower_lip}[unit]


def au_displacement(
    au: int, meas: g.FaceMeasures, amount: float, sides: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """Displacement of one tabled action unit at ``amount`` (1 = full), weighted per side (image-left, -right)."""
    d = np.zeros((fg.N_POINTS, 2))
    for left, right, unit, out, up in AU_ROWS[au]:
        if not right:
            w = amount * (sides[0] + sides[1]) / 2
            d[list(left), 1] -= up * _unit(meas, unit, 0) * w
            continue
        for idx, sign, side in ((left, -1.0, 0), (right, 1.0, 1)):
            w = amount * sides[side]
            u = _unit(meas, unit, side)
            d[list(idx), 0] += sign * out * u * w
            d[list(idx), 1] -= up * u * w
    return d


def neutralise(pts: np.ndarray, meas: g.FaceMeasures) -> np.ndarray:
    """Displacement that turns an upright face with parted lips or a smile into a closed, level mouth.

    The jaw closes by the lip gap (lower lip and chin up, upper lip down a little), lifted mouth corners are
    lowered by a reversed AU12, and the inner lips end exactly on each other.
    """
    gap = float(np.mean(pts[fg.INNER_LOWER, 1] - pts[fg.INNER_UPPER, 1]))
    d = np.zeros((fg.N_POINTS, 2))
    if gap > 0.5:
        d += jaw_drop(meas, -0.8 * gap / meas.iod, narrow=0.0)
        d[[61, 62, 63], 1] += 0.2 * gap
    lift = ((pts[51, 1] + pts[57, 1]) / 2 - (pts[48, 1] + pts[54, 1]) / 2) / meas.iod
    if lift > 0.02:
        d += au_displacement(12, meas, -0.85 * (lift - 0.02) / 0.095)
    q = pts + d
    mid = (q[fg.INNER_UPPER] + q[fg.INNER_LOWER]) / 2
    d[fg.INNER_UPPER] += mid - q[fg.INNER_UPPER]
    d[fg.INNER_LOWER] += mid - q[fg.INNER_LOWER]
    return d


def constrain(pts: np.ndarray, d: np.ndarray, meas: g.FaceMeasures) -> np.ndarray:
    """Limit a displacement so that lids keep >= 20% of their gap and lips never cross (returns a copy)."""
    d = d.copy()
    q = pts + d
    for upper, lower, side in (((37, 38), (41, 40), 0), ((43, 44), (47, 46), 1)):
        min_gap = 0.2 * meas.eye_h[side]
        for u, lo in zip(upper, lower, strict=True):
            gap = q[lo, 1] - q[u, 1]
            if gap < min_gap:
                fix = (min_gap - gap) / 2
                d[u, 1] -= fix
                d[lo, 1] += fix
    q = pts + d
    for u, lo in zip(fg.INNER_UPPER, fg.INNER_LOWER, strict=True):
        if q[lo, 1] < q[u, 1]:
            mid = (q[lo, 1] + q[u, 1]) / 2
            d[u, 1] += mid - q[u, 1]
            d[lo, 1] += mid - q[lo, 1]
    return d
