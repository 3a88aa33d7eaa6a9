"""The model family: appearance and geometry networks picked by name from a registry, fused by TwoStream.

Public API::

    build_model(cfg: ModelConfig, n_classes, in_channels, n_steps=None) -> TwoStream
    in_channels_for(input_cfg: ModelInputConfig, color: bool) -> int
    register_model(kind, name=None)  # decorator for builder(cfg, ctx: BuildContext) -> nn.Module
    list_models(kind=None)

Adding a network: drop a module into this package whose builder carries ``@register_model("appearance")`` (or
``"geometry"``). Importing the package loads only the configs (no torch), so config-only users such as
``seqfer preprocess`` and its workers start fast; the first use of a network-side name or of a registry lookup
imports every module here (:func:`load_models`; sorted by name, modules whose name starts with ``_`` skipped).
The input/output contracts are in :mod:`stages.learning.models.registry`.
"""

from __future__ import annotations

import importlib
import pkgutil

from stages.learning.models.config import (
    AppearanceConfig,
    AugmentConfig,
    GeometryConfig,
    ModelConfig,
    ModelInputConfig,
    TrainConfig,
)

_TORCH_NAMES = {
    "BuildContext": "stages.learning.models.registry",
    "build_stream": "stages.learning.models.registry",
    "get_entry": "stages.learning.models.registry",
    "list_models": "stages.learning.models.registry",
    "parse_options": "stages.learning.models.registry",
    "register_model": "stages.learning.models.registry",
    "unregister_model": "stages.learning.models.registry",
    "TwoStream": "stages.learning.models.two_stream",
    "build_model": "stages.learning.models.two_stream",
    "frames_for": "stages.learning.models.two_stream",
    "in_channels_for": "stages.learning.models.two_stream",
}
_loaded = False


def load_models() -> None:
    """Import every model module of this package (registering its networks); idempotent. Importing the package
    itself loads only the configs (no torch), so config-only users such as ``seqfer preprocess`` and its
    workers start fast; the first use of a network-side name, or of a registry lookup, loads everything."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def __getattr__(name: str) -> object:
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    load_models()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "load_models",
    "parse_options",
    "register_model",
    "unregister_model",
]
