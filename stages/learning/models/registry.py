"""Registry of the networks that can fill the appearance and geometry streams, keyed by name.

Adding a network = one new module in ``stages/learning/models/`` (imported automatically by the package) with a builder
decorated by :func:`register_model`::

    from stages.learning.models.registry import BuildContext, parse_options, register_model

    class DtanOptions(BaseModel):                       # only if the network has its own settings
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        fc: int = 500

    @register_model("appearance", name="dtan")
    def dtan(cfg: AppearanceConfig, ctx: BuildContext) -> nn.Module:
        opts = parse_options(cfg, DtanOptions, "dtan")
        return Dtan(ctx.in_channels, ctx.n_classes, fc=opts.fc, dropout=cfg.dropout)

A network's data needs are fields of its registration, so every data path reads them from one place
(:func:`stages.learning.inputs.extras.needs_of`): ``input_extras`` names appearance channels appended to its input
(pcnn:
``("face_regions",)``; appearance networks only), ``training_targets`` names per-sequence arrays its training
reads (fn2en: ``("face_descriptor",)``).

Contracts of the returned ``nn.Module`` (pure torch; no files, no I/O):

- appearance: ``forward(x)`` with ``x`` [B, C, S, S] float32 in [0, 1] (C = frames x colour channels,
  frame-major: channel ``f * colours + c``; S = ``ctx.input_size``) returns logits [B, ``ctx.n_classes``].
  It normalises its input itself. Must accept any B >= 1 in eval mode and give per-sample results
  independent of the batch. Optional: ``features(x)``.
- geometry: ``forward(traj)`` with ``traj`` [B, L, 68, 2] float32 (normalised landmark displacements from
  the first frame, (x, y)) returns logits [B, ``ctx.n_classes``]. ``ctx.n_steps`` is the training L (None if
  unknown); networks that need a fixed L must check it and raise :class:`stages.errors.StageError` otherwise.

Optional first training stage: a network that is :class:`Pretrainable` returns from ``pretraining(targets, n,
device)`` a :class:`Pretraining` (or None to skip it); :func:`stages.learning.training.fit.fit` runs it in its own
training
loop, on the training split, before the expression training.

Both kinds may use BatchNorm/Dropout (training batches have >= 2 samples) and must be deterministic on CPU
for a fixed seed. Builders raise :class:`stages.errors.StageError` for a config they cannot honour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from stages.errors import StageError

StreamKind = Literal["appearance", "geometry"]
STREAM_KINDS: tuple[str, ...] = ("appearance", "geometry")


@dataclass(frozen=True)
class BuildContext:
    """Shapes a builder needs besides its config.

    ``n_classes``: logits per sample; ``in_channels``: C of the appearance input; ``input_size``: S in pixels;
    ``n_steps``: trajectory length L the model is trained on (None when unknown).
    """

    n_classes: int
    in_channels: int = 1
    input_size: int = 64
    n_steps: int | None = None


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registration: ``input_extras`` / ``training_targets`` are the network's data needs (names in
    :mod:`stages.learning.inputs.extras`)."""

    name: str
    kind: str
    builder: Builder
    doc: str
    input_extras: tuple[str, ...] = ()
    training_targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pretraining:
    """A network's first training stage, run by :func:`stages.learning.training.fit.fit` before the expression training.

    ``epochs`` of shuffled training batches (``train.batch_size``, augmented as configured) with AdamW at ``lr``
    (cosine-decayed to 0 over ``epochs``, ``train.weight_decay``) on ``parameters`` only; each batch's loss is
    ``loss(augmented stream input batch, target[batch rows])``; ``target`` [N, ...] is on the training device."""

    epochs: int
    lr: float
    parameters: list[nn.Parameter]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    target: torch.Tensor


@runtime_checkable
class Pretrainable(Protocol):
    """A stream network with a first training stage: ``pretraining(targets, n, device)`` gets the training
    split's ``training_targets`` (name -> [n, ...] array) and returns its :class:`Pretraining`, or None when
    it is configured off; :class:`stages.errors.StageError` when a target it needs is missing or malformed."""

    def pretraining(self, targets: dict[str, np.ndarray], n: int, device: str) -> Pretraining | None: ...


_REGISTRY: dict[str, dict[str, ModelEntry]] = {kind: {} for kind in STREAM_KINDS}

B = TypeVar("B", bound=Builder)


def register_model(
    kind: StreamKind,
    name: str | None = None,
    input_extras: tuple[str, ...] = (),
    training_targets: tuple[str, ...] = (),
) -> Callable[[B], B]:
    """Decorator: register ``builder(cfg, ctx) -> nn.Module`` as stream ``kind`` under ``name`` (default: the
    function's name), with the appearance channels it reads beyond the frames (``input_extras``) and the
    per-sequence arrays its training reads (``training_targets``). Registering a different builder under a
    taken name, or extras for a geometry network, raises ``ValueError``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {', '.join(STREAM_KINDS)}")
    if input_extras and kind != "appearance":
        raise ValueError(f"{kind} networks cannot declare appearance extras {tuple(input_extras)}")

    def decorate(builder: B) -> B:
        key = name or builder.__name__
        old = _REGISTRY[kind].get(key)
        if old is not None and (old.builder.__module__, old.builder.__qualname__) != (
            builder.__module__,
            builder.__qualname__,
        ):
            raise ValueError(f"{kind} model {key!r} is already registered by {old.builder.__module__}")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[kind][key] = ModelEntry(
            key, kind, builder, doc[0] if doc else "", tuple(input_extras), tuple(training_targets)
        )
        return builder

    return decorate


def _load_package() -> None:
    """Register the package's own networks before any lookup (the package loads them lazily)."""
    import stages.learning.models

    stages.learning.models.load_models()


def unregister_model(kind: StreamKind, name: str) -> None:
    """Remove a registration (for tests and plugins that replace a network)."""
    _REGISTRY[kind].pop(name, None)


def list_models(kind: StreamKind | None = None) -> dict[str, list[str]] | list[str]:
    """Registered names, sorted: of one kind (a list) or of every kind (a dict kind -> list)."""
    _load_package()
    if kind is not None:
        return sorted(_REGISTRY[kind])
    return {k: sorted(v) for k, v in _REGISTRY.items()}


def get_entry(kind: StreamKind, name: str) -> ModelEntry:
    """The registration of ``name``; :class:`StageError` listing the registered names when unknown."""
    _load_package()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY.get(kind, {}))) or "(none)"
        raise StageError(f"unknown {kind} model {name!r}; registered {kind} models: {known}") from None


def build_stream(kind: StreamKind, cfg: BaseModel, ctx: BuildContext) -> nn.Module:
    """Build the network ``cfg.name`` of stream ``kind``."""
    return get_entry(kind, cfg.name).builder(cfg, ctx)


M = TypeVar("M", bound=BaseModel)


def parse_options(cfg: BaseModel, schema: type[M], model_name: str) -> M:
    """Validate ``cfg.options`` against a network's own pydantic schema; :class:`StageError` on a bad
    key/value."""
    try:
        return schema.model_validate(getattr(cfg, "options", {}) or {})
    except ValidationError as exc:
        raise StageError(f"bad options for model {model_name!r}: {exc}") from None
