"""Where seqfer keeps its converted copies of the dlib models (the saved HOG detector, the shape model's arrays)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Where converted copies of the dlib models are kept: ``$SEQFER_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/seqfer``, else ``~/.cache/seqfer``."""
    if os.environ.get("SEQFER_CACHE_DIR"):
        return Path(os.environ["SEQFER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seqfer"
