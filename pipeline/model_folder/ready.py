"""The ready models that ship inside the package, by name: ``fer2013`` wherever a model folder is accepted.

A ready model is an ordinary model folder (see :mod:`pipeline.model_folder.format`) kept under
``pipeline/model_folder/ready/<name>/`` and installed with the package: nothing is downloaded. Its model card
(``README.md`` there) gives its figures, the command that retrains it and its data's terms of use.
"""

from __future__ import annotations

from pathlib import Path

READY_DIR = Path(__file__).resolve().parent / "ready"
"""Where the package keeps its ready model folders, one per name."""

READY_MODELS: dict[str, str] = {
    "fer2013": "skipnet trained on FER2013's 28,709 training faces (7 classes, neutral included); research use only",
}
"""THE table of ready models: name -> one line for a person."""

DEFAULT_MODEL = "fer2013"
"""The model `seqfer predict` uses when it is given inputs only."""


def ready_model_dir(name: str) -> Path | None:
    """The installed folder of ready model ``name`` (case-insensitive), or None when ``name`` is not one."""
    key = name.strip().lower()
    return READY_DIR / key if key in READY_MODELS else None


def list_ready_models() -> list[str]:
    """The ready models' names, sorted."""
    return sorted(READY_MODELS)
