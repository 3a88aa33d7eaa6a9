"""Shared fixtures.

``shared_dir``: the project-external test material at ``../shared`` (real faces and videos); tests that use it
skip with a reason when it is absent, because a user's clone has no ``../shared``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # tests also run from a plain checkout, before `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DIR = Path(os.environ.get("SEQFER_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path to ../shared; skips the test when it is absent."""
    if not (SHARED_DIR / "faces").is_dir():
        pytest.skip(f"../shared test material not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session shared by every test that needs it (start-up costs ~2 s and ~700 MB)."""
    from pipeline.config import RayConfig
    from pipeline.ray_runtime import ensure_ray

    ensure_ray(RayConfig(workers=2))
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated CK+-layout demo set (4 subjects, 8 labelled sequences) built once per session."""
    from data_manifests.demo import generate_demo

    root = tmp_path_factory.mktemp("tiny_demo")
    generate_demo(root, layout="ckplus", n_subjects=4, seed=0, n_sequences=8)
    return root
