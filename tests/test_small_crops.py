"""Already-cropped small faces (CK+48-style 48x48 crops): landmarks are found on the upscaled crop and the aligned
crop keeps the dataset's framing instead of filling itself with replicated border.

Contract: ``configs/ck48.yaml``'s preprocessing on a tight 48x48 grey crop (forehead to chin, outer-eye distance
about half the side) finds the face in every frame, and at most a few percent of the aligned crop is sampled from
outside the source image. The default (full-frame video) framing would take over a third from outside.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.config import load_config
from stages.preprocess.align import AlignConfig, align_face
from stages.preprocess.decode import SequenceSource
from stages.preprocess.sequence import SequenceProcessor

SIDE = 48


def outside_fraction(points: np.ndarray, shape: tuple[int, int], cfg: AlignConfig) -> float:
    """Share of the aligned crop's pixels that come from outside a source image of ``shape`` (H, W)."""
    mask = np.full(shape, 255, np.uint8)
    face = align_face(mask, points, cfg.model_copy(update={"border": "constant"}))
    return float((face.image < 128).mean())


def test_ck48_framing_keeps_the_crop_and_default_framing_does_not(tight_crop, tmp_path: Path) -> None:
    crop, _ = tight_crop
    frames = []
    for i in range(3):
        path = tmp_path / f"S001_001_{i + 1:08d}.png"
        cv2.imwrite(str(path), crop)
        frames.append(str(path))
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "ck48.yaml")
    rec = SequenceProcessor(cfg.preprocess).process(SequenceSource("s", tuple(frames))).record
    assert rec is not None and rec.success.all()
    found = rec.landmarks[-1]
    assert outside_fraction(found, crop.shape, cfg.preprocess.align) < 0.05
    assert outside_fraction(found, crop.shape, AlignConfig()) > 0.3
    aligned = cv2.resize(rec.aligned[-1], (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float64)
    corr = np.corrcoef(aligned.ravel(), crop.astype(np.float64).ravel())[0, 1]
    assert corr > 0.9, corr
