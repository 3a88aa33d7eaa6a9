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
    from pipeline.runtime.ray_start import ensure_ray

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


@pytest.fixture(scope="session")
def tight_crop() -> tuple:
    """(48x48 grey uint8 crop of the packaged astronaut face framed like CK+48, its 68 points in crop pixels)."""
    import cv2
    import numpy as np

    from data_manifests.demo.faces import astronaut_face
    from stages.image import to_grey

    side_px = 48
    face = astronaut_face()
    pts = face.landmarks.astype(np.float64)
    eye_mid = (pts[36] + pts[45]) / 2
    side = np.linalg.norm(pts[45] - pts[36]) / 0.51  # CK+48: outer-eye distance ~0.51 of the side
    x0, y0 = eye_mid[0] - side / 2, eye_mid[1] - 0.40 * side  # eye line at 40% of the height
    m = np.array([[side_px / side, 0, -x0 * side_px / side], [0, side_px / side, -y0 * side_px / side]])
    crop = cv2.warpAffine(
        to_grey(face.image), m, (side_px, side_px), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
    )
    return crop, pts @ m[:, :2].T + m[:, 2]


class _KilledAfterEpoch(Exception):
    """Stands for a kill mid-training, raised from ``fit``'s ``on_epoch`` after that epoch's state was saved."""


@pytest.fixture
def kill_after_epoch():
    """``(exception class, make)``: ``make(n)`` is an ``on_epoch`` callback that raises the exception once epoch
    ``n`` (1-based) has been reported, i.e. after its training state is on disk."""

    def make(epoch: int):
        def on_epoch(row: dict) -> None:
            if row["epoch"] == epoch:
                raise _KilledAfterEpoch

        return on_epoch

    return _KilledAfterEpoch, make
