"""Expression prototypes: the CK+ classes as action-unit recipes, and random instances of them.

Class recipes follow FACS/EMFACS prototypes (AU weights at full intensity):
surprise AU1+2+5+26, happy AU6+12(+25), anger AU4+5+7+17+23+24, disgust AU4+9+10+15+17, fear AU1+2+4+5+20+26,
sadness AU1+4+15+17, contempt unilateral AU14(+12). An expression's displacement is built from the action units
of :mod:`~data_manifests.demo.action_units`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_manifests.demo import geometry as g
from data_manifests.demo.action_units import AU_ROWS, au_displacement, jaw_drop, lips_part
from stages import face_geometry as fg


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
