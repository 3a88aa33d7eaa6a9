"""Expression displacement prototypes: action-unit-like landmark moves, combined per CK+ class.

Every displacement is a (68, 2) array of pixel offsets for an *upright* face (eye line horizontal, y down),
scaled by that face's own sizes (:class:`~data_manifests.demo.geometry.FaceMeasures`): brow and cheek moves by
the outer-eye distance, lid moves by the eye height, lip-thickness moves by the lip thickness. So a narrow eye
is never closed past its lids and a thin lip is never pressed through itself.

Class recipes follow FACS/EMFACS prototypes (AU weights at full intensity):
surprise AU1+2+5+26, happy AU6+12(+25), anger AU4+5+7+17+23+24, disgust AU4+9+10+15+17, fear AU1+2+4+5+20+26,
sadness AU1+4+15+17, contempt unilateral AU14(+12).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Expression:
    """An expression's action units: ``aus`` maps AU number to amount (1 = full; for 26 the jaw drop in
    outer-eye distances, for 25 the lip parting), ``sides`` weights the image-left/right half (contempt)."""

    aus: dict[int, float]
    sides: tuple[float, float] = (1.0, 1.0)
    narrow: float = 0.2  # inward mouth-corner move per unit of jaw drop (O-shaped vs stretched open mouth)
    idiosyncrasy: np.ndarray | None = None  # (68, 2) extra apex offsets in outer-eye distances

    def displacement(self, meas: g.FaceMeasures) -> np.ndarray:
        """The (68, 2) apex displacement for a face with measures ``meas`` (lids and lips kept valid)."""
        d = np.zeros((fg.N_POINTS, 2))
        for au, amount in self.aus.items():
            if au == 26:
                d += jaw_drop(meas, amount, narrow=self.narrow)
            elif au == 25:
                d += lips_part(meas, amount)
            elif au in AU_ROWS:
                d += au_displacement(au, meas, amount, self.sides)
        if self.idiosyncrasy is not None:
            d += self.idiosyncrasy * meas.iod
        return d


# Full-intensity recipes. Key 26: jaw drop in outer-eye distances; 25: lip parting in outer-eye distances.
CLASS_RECIPES: dict[str, dict[int, float]] = {
    "anger": {4: 1.0, 5: 0.3, 7: 0.9, 17: 0.6, 23: 0.8, 24: 0.8},
    "contempt": {14: 1.25, 12: 0.25},
    "disgust": {4: 0.45, 9: 1.0, 10: 1.0, 15: 0.35, 17: 0.5, 7: 0.25},
    "fear": {1: 0.9, 2: 0.6, 4: 0.6, 5: 1.0, 20: 1.0, 26: 0.13},
    "happy": {6: 1.1, 12: 1.25, 25: 0.05},
    "sadness": {1: 1.0, 4: 0.6, 15: 1.0, 17: 0.7},
    "surprise": {1: 1.0, 2: 1.0, 5: 1.0, 26: 0.36},
}
UNILATERAL = {"contempt"}
MOUTH_NARROW = {"surprise": 0.22, "fear": 0.0}  # default 0.2


# Classes whose action units a sequence of the key class borrows most often (real expressions blend).
CONFUSABLE: dict[str, list[str]] = {
    "anger": ["disgust", "sadness"],
    "contempt": ["happy", "disgust"],
    "disgust": ["anger", "sadness"],
    "fear": ["surprise", "sadness"],
    "happy": ["contempt", "surprise"],
    "sadness": ["anger", "fear"],
    "surprise": ["fear", "happy"],
}
STYLE_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)
"""Action units a subject's personal gains (:func:`subject_au_gains`) apply to, in this order."""


def subject_au_gains(rng: np.random.Generator) -> tuple[float, ...]:
    """A subject's personal gain per action unit of :data:`STYLE_AUS` (some raise their brows little...)."""
    return tuple(float(v) for v in np.clip(rng.lognormal(0.0, 0.25, len(STYLE_AUS)), 0.55, 1.6))


def sample_expression(
    label: str | None, rng: np.random.Generator, expressiveness: float = 1.0, au_gains: tuple[float, ...] | None = None
) -> Expression:
    """A random instance of class ``label`` (None: an unlabelled, non-prototypical mix of two classes).

    Variation, so that classes overlap as in real data without losing their identity: overall intensity
    ~ U(0.55, 1.2) x ``expressiveness``, times the subject's personal ``au_gains`` (see
    :func:`subject_au_gains`) and a ~22% jitter per AU, kept within 0.4-1.4 of the recipe; with probability
    0.55 one or two action units of another (mostly a confusable) class leak in at 15-45%; and small
    idiosyncratic apex offsets (~1.2% of the eye distance per point).
    """
    names = sorted(CLASS_RECIPES)
    if label is None:
        a, b = rng.choice(len(names), size=2, replace=False)
        mix = {}
        for name, w in ((names[a], rng.uniform(0.35, 0.6)), (names[b], rng.uniform(0.3, 0.5))):
            for au, amount in CLASS_RECIPES[name].items():
                mix[au] = mix.get(au, 0.0) + amount * w
        recipe, unilateral = mix, names[a] in UNILATERAL or names[b] in UNILATERAL
        narrow = MOUTH_NARROW.get(names[a], 0.2)
    else:
        recipe, unilateral = dict(CLASS_RECIPES[label]), label in UNILATERAL
        narrow = MOUTH_NARROW.get(label, 0.2)
    gains = dict(zip(STYLE_AUS, au_gains, strict=True)) if au_gains is not None else {}
    intensity = rng.uniform(0.55, 1.2) * expressiveness
    aus = {}
    for au, amount in recipe.items():
        jitter = float(np.clip(rng.normal(1.0, 0.22), 0.5, 1.6))
        aus[au] = amount * float(np.clip(intensity * jitter * gains.get(au, 1.0), 0.4, 1.4))
    if label is not None and rng.random() < 0.55:
        for _ in range(1 + int(rng.random() < 0.35)):
            pool = CONFUSABLE[label] if rng.random() < 0.7 else names
            donor = pool[rng.integers(len(pool))]
            au = list(CLASS_RECIPES[donor])[rng.integers(len(CLASS_RECIPES[donor]))]
            if au != 14:
                aus[au] = aus.get(au, 0.0) + CLASS_RECIPES[donor][au] * rng.uniform(0.15, 0.45)
    sides = (1.0, 1.0)
    if unilateral:
        side = int(rng.integers(2))
        sides = (1.0, 0.15) if side == 0 else (0.15, 1.0)
    idio = rng.normal(0.0, 0.012, (fg.N_POINTS, 2))
    idio[fg.JAW] *= 0.5
    return Expression(aus=aus, sides=sides, narrow=narrow, idiosyncrasy=idio)


def facs_codes(expr: Expression) -> list[tuple[int, int]]:
    """(AU, intensity 1-5 for A-E) pairs a FACS coder would list for this expression at its apex."""
    out = []
    for au, amount in sorted(expr.aus.items()):
        if au == 26:
            level = amount / 0.36
            au = 27 if amount > 0.42 else 26
            out.append((25, int(np.clip(1 + level * 3, 1, 5))))
        elif au == 25:
            level = amount / 0.05
        else:
            level = amount
        if level < 0.25:
            continue
        out.append((au, int(np.clip(round(level * 4), 1, 5))))
    return sorted(set(out))


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
