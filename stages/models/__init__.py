"""The model family: appearance and geometry networks picked by name from a registry, fused by TwoStream.

Public API::

    build_model(cfg: ModelConfig, n_classes, in_channels, n_steps=None) -> TwoStream
    in_channels_for(input_cfg: ModelInputConfig, color: bool) -> int
    register_model(kind, name=None)  # decorator for builder(cfg, ctx: BuildContext) -> nn.Module
    list_models(kind=None)

Adding a network: drop a module into this package whose builder carries ``@register_model("appearance")`` (or
``"geometry"``); every module here is imported when the package is imported (sorted by name; modules whose
name starts with ``_`` are skipped). The input/output contracts are in :mod:`stages.models.registry`.
"""

from __future__ import annotations

import importlib
import pkgutil

from stages.models.config import (
    AppearanceConfig,
    AugmentConfig,
    GeometryConfig,
    ModelConfig,
    ModelInputConfig,
    TrainConfig,
)
from stages.models.registry import (
    BuildContext,
    build_stream,
    get_entry,
    list_models,
    parse_options,
    register_model,
    unregister_model,
)
from stages.models.two_stream import TwoStream, build_model, frames_for, in_channels_for


def _import_model_modules() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_model_modules()

__all__ = [
    "AppearanceConfig",
    "AugmentConfig",
    "BuildContext",
    "GeometryConfig",
    "ModelConfig",
    "ModelInputConfig",
    "TrainConfig",
    "TwoStream",
    "build_model",
    "build_stream",
    "frames_for",
    "get_entry",
    "in_channels_for",
    "list_models",
    "parse_options",
    "register_model",
    "unregister_model",
]
