"""Model inputs beyond (appearance, trajectory) that a network declares, computed once per sequence.

Two kinds, each a registry keyed by name:

- appearance extras (:data:`APPEARANCE_EXTRAS`): channels appended AFTER the stacked frames of the appearance
  input, rendered from the peak frame's aligned landmarks (``face_regions``: pcnn's five region masks). Being
  pixels, they go through training augmentation (flip, rotation, zoom, shift) together with the face. They are
  needed at prediction time too.
- training targets (:data:`TRAINING_TARGETS`): per-sequence arrays that only training reads
  (``face_descriptor``: fn2en's stage-1 regression target); they travel in ``ArrayDataset.targets``.

A network declares what it needs in its registration (:func:`stages.learning.models.registry.register_model`)::

    @register_model("appearance", name="pcnn", input_extras=("face_regions",))
    @register_model("appearance", name="fn2en", training_targets=("face_descriptor",))

and every data path asks :func:`needs_of` (training: ``pipeline.data.labelled.load_labelled_data``; prediction:
:func:`build_model_inputs`, i.e. ``build_stream_inputs`` plus the extras).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import StageError
from stages.face_geometry import N_POINTS
from stages.learning.inputs.streams import build_stream_inputs, select_frames
from stages.learning.models.config import ModelConfig, ModelInputConfig
from stages.learning.models.face_regions import N_REGIONS, region_masks
from stages.learning.models.registry import get_entry
from stages.record import SequenceRecord


@dataclass(frozen=True)
class Extra:
    """An appearance extra: ``channels`` appended, rendered by ``render(landmarks [68, 2], size) ->
    [channels, size, size] float32``."""

    channels: int
    render: Callable[[np.ndarray, int], np.ndarray]


APPEARANCE_EXTRAS: dict[str, Extra] = {"face_regions": Extra(N_REGIONS, region_masks)}


def _face_descriptor_targets(records: Sequence[SequenceRecord], cache_dir: Path | None) -> np.ndarray:
    from stages.learning.inputs.face_descriptor import face_descriptors  # imports dlib: only when a network needs it

    return face_descriptors(records, cache_dir)


TRAINING_TARGETS: dict[str, Callable[[Sequence[SequenceRecord], Path | None], np.ndarray]] = {
    "face_descriptor": _face_descriptor_targets,
}
"""target name -> (records, cache folder or None) -> [N, ...] array, one row per record."""


@dataclass(frozen=True)
class ModelNeeds:
    """Names of the appearance extras and training targets a model (or several) needs, in a fixed order."""

    extras: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __or__(self, other: ModelNeeds) -> ModelNeeds:
        return ModelNeeds(
            tuple(dict.fromkeys(self.extras + other.extras)), tuple(dict.fromkeys(self.targets + other.targets))
        )


def needs_of(model_cfg: ModelConfig) -> ModelNeeds:
    """What the configured streams' networks declared in their registrations (``input_extras`` /
    ``training_targets``). Only appearance networks can have extras (they are appearance channels)."""
    needs = ModelNeeds()
    streams = {"appearance": model_cfg.appearance, "geometry": model_cfg.geometry}
    used = {"fused": ("appearance", "geometry")}.get(model_cfg.streams, (model_cfg.streams,))
    for kind in used:
        entry = get_entry(kind, streams[kind].name)
        needs = needs | ModelNeeds(entry.input_extras, entry.training_targets)
    for name in needs.extras:
        if name not in APPEARANCE_EXTRAS:
            raise StageError(f"unknown appearance extra {name!r}; known: {', '.join(sorted(APPEARANCE_EXTRAS))}")
    for name in needs.targets:
        if name not in TRAINING_TARGETS:
            raise StageError(f"unknown training target {name!r}; known: {', '.join(sorted(TRAINING_TARGETS))}")
    return needs


def peak_landmarks(record: SequenceRecord, cfg: ModelInputConfig) -> np.ndarray:
    """Aligned landmarks [68, 2] float32 (x, y) of the peak frame (the LAST frame stacked into the appearance
    input), scaled from crop pixels to model-input pixels (``cfg.size``; pixel centres map as cv2.resize maps
    them: x' = (x + 0.5) * size / crop - 0.5)."""
    t = int(select_frames(record.success, cfg)[-1])
    pts = np.asarray(record.aligned_landmarks[t], dtype=np.float64)
    if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
        raise StageError(f"sequence {record.sequence_id}: peak frame {t} has no finite aligned landmarks")
    scale = cfg.size / float(record.aligned.shape[1])
    return ((pts + 0.5) * scale - 0.5).astype(np.float32)


def build_landmarks(records: Sequence[SequenceRecord], cfg: ModelInputConfig) -> np.ndarray:
    """:func:`peak_landmarks` of every record: [N, 68, 2] float32."""
    return np.stack([peak_landmarks(r, cfg) for r in records]) if records else np.zeros((0, N_POINTS, 2), np.float32)


def append_extras(appearance: np.ndarray, landmarks: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """[N, C, S, S] appearance (float32 in [0, 1], or uint8 grey levels) + the named extras rendered from
    ``landmarks`` [N, 68, 2] (model-input pixels) -> [N, C + sum(channels), S, S] float32 in [0, 1]. Returns
    ``appearance`` itself when ``names`` is empty."""
    if not names:
        return appearance
    if len(landmarks) != len(appearance):
        raise StageError(f"{len(landmarks)} landmark sets for {len(appearance)} appearance inputs")
    size = appearance.shape[-1]
    app = appearance.astype(np.float32) / np.float32(255.0) if appearance.dtype == np.uint8 else appearance
    parts = [app.astype(np.float32, copy=False)]
    for name in names:
        extra = APPEARANCE_EXTRAS[name]
        rendered = (
            np.stack([extra.render(p, size) for p in landmarks])
            if len(landmarks)
            else np.zeros((0, extra.channels, size, size), np.float32)
        )
        parts.append(rendered.astype(np.float32, copy=False))
    return np.concatenate(parts, axis=1)


def extra_channels(names: Sequence[str]) -> int:
    """Channels the named extras add."""
    return sum(APPEARANCE_EXTRAS[n].channels for n in names)


def model_inputs(
    records: Sequence[SequenceRecord], input_cfg: ModelInputConfig, extras: Sequence[str] = (), compact: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """THE path from preprocessed records to model tensors, shared by training (pipeline.data.labelled) and prediction
    (pipeline.predict.predictor): appearance [N, C + extras, S, S] (stacked frames, then the named extras rendered from
    the peak landmarks), trajectory [N, L, 68, 2], and those peak landmarks [N, 68, 2] (model-input pixels).

    Appearance is held compactly where that is exact (``compact``, no face mask, no extras): uint8 grey levels,
    value x 255 (:func:`stages.learning.inputs.streams.appearance_input`); else float32 in [0, 1]. Training and
    prediction make it float per batch (:func:`stages.learning.training.dataset.appearance_float`), bit-identical
    to the float32 input."""
    appearance, trajectory = build_stream_inputs(records, input_cfg, compact and not extras)
    landmarks = build_landmarks(records, input_cfg)
    return append_extras(appearance, landmarks, extras), trajectory, landmarks


def build_model_inputs(records: Sequence[SequenceRecord], model_cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """What a model built from ``model_cfg`` reads: :func:`model_inputs` with the network's declared extras."""
    appearance, trajectory, _ = model_inputs(records, model_cfg.input, needs_of(model_cfg).extras)
    return appearance, trajectory


def build_targets(
    records: Sequence[SequenceRecord], names: Sequence[str], cache_dir: str | Path | None = None
) -> dict[str, np.ndarray]:
    """The named training targets of every record: name -> [N, ...] (each computed once, cached where the
    target supports it)."""
    return {n: TRAINING_TARGETS[n](records, None if cache_dir is None else Path(cache_dir)) for n in names}
