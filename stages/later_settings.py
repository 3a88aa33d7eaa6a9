"""Settings models that gain fields later without changing what earlier configs dump.

A cache key, a run's resume key and a model's fingerprint are hashes of settings dumps. A field added later would
change every dump, and so every key, even for configs that keep the old behaviour. A :class:`LaterSettings` model
names, in :attr:`~LaterSettings.AS_BEFORE`, each such field with the value that behaves as before the field existed;
at that value the field is left out of its dumps. Any other value is dumped, so results made without it are never
reused for it. Reading a dump back fills the left-out fields with their defaults, which are those values.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer


class LaterSettings(BaseModel):
    """A settings model whose fields in :attr:`AS_BEFORE` are left out of dumps at their as-before value."""

    AS_BEFORE: ClassVar[dict[str, object]] = {}
    """Field name -> the value at which the field is not dumped (its default, the behaviour before it existed)."""

    @model_serializer(mode="wrap")
    def _omit_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        for name, value in self.AS_BEFORE.items():
            if name in data and data[name] == value:
                del data[name]
        return data
