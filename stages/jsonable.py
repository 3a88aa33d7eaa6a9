"""The one JSON encoder hook for values the standard library cannot encode (numpy, paths, pydantic models...)."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import PurePath

import numpy as np
from pydantic import BaseModel


def json_default(obj: object) -> object:
    """``json.dumps(..., default=json_default)``: pydantic models as ``model_dump(mode="json")``, paths as str,
    numpy arrays as lists and numpy scalars as Python values, sets sorted by their JSON text, dataclasses as
    dicts, enums as their values, bytes as hex. Raises :class:`TypeError` for anything else."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=lambda v: json.dumps(v, sort_keys=True, default=json_default))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
