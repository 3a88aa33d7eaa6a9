"""The aligned level of still images smaller than their crop keeps no crop pixels: a read re-aligns them from the
source (:mod:`stages.preprocess.aligned_level`).

Contract: a 48 px face crop aligned at 96 px (CK+48's and FER2013's case) is cached as its aligned landmarks only;
reading it back gives the crops processing gave, bit for bit; a source changed under the same name, size and
modification time, or gone, makes the entry count as missing, never a record with other pixels; images with at
least a crop's pixels, and video frames, keep their crops.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import load_config
from stages.preprocess.aligned_level import DERIVED
from stages.preprocess.cache_format import checksum
from stages.preprocess.decode import SequenceSource
from stages.preprocess.sequence import SequenceProcessor, sequence_keys
from stages.record import SequenceStatus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ck48_cfg():
    """``configs/ck48.yaml``'s preprocessing: 96 px grey crops of 48 px sources."""
    return load_config(ROOT / "configs" / "ck48.yaml").preprocess


def _image(tmp_path: Path, image: np.ndarray, name: str = "S001_001_00000001.png") -> SequenceSource:
    path = tmp_path / name
    cv2.imwrite(str(path), image)
    return SequenceSource(path.stem, (str(path),))


def _aligned_entry(processor: SequenceProcessor, source: SequenceSource, cfg):
    assert processor.caches is not None
    return processor.caches["aligned"].load(sequence_keys(source, cfg)["aligned"])


def test_a_small_image_keeps_no_crop_and_reads_back_the_same_crops(tight_crop, ck48_cfg, tmp_path: Path) -> None:
    source = _image(tmp_path, tight_crop[0])
    fresh = SequenceProcessor(ck48_cfg).process(source).record  # no cache at all
    processor = SequenceProcessor(ck48_cfg, tmp_path / "cache")
    first = processor.process(source)
    assert first.status == SequenceStatus.OK and fresh is not None
    entry = _aligned_entry(processor, source, ck48_cfg)
    level = {"aligned": fresh.aligned, "aligned_landmarks": fresh.aligned_landmarks}
    assert entry.meta.get(DERIVED) == checksum(level, "") and set(entry.arrays) == {"aligned_landmarks"}
    for reader in (processor, SequenceProcessor(ck48_cfg, tmp_path / "cache")):  # the same and a new process
        record = reader.load(source)
        assert record is not None
        assert np.array_equal(record.aligned, fresh.aligned) and record.aligned.shape == (1, 96, 96)
        assert np.array_equal(record.aligned_landmarks, fresh.aligned_landmarks)
    again = SequenceProcessor(ck48_cfg, tmp_path / "cache").process(source)
    assert again.cached and np.array_equal(again.record.aligned, fresh.aligned)


def test_a_changed_or_lost_source_is_never_read_as_its_old_crops(tight_crop, ck48_cfg, tmp_path: Path) -> None:
    source = _image(tmp_path, tight_crop[0], "S001_001_00000001.bmp")  # BMP: the same size whatever the pixels
    processor = SequenceProcessor(ck48_cfg, tmp_path / "cache")
    assert processor.process(source).status == SequenceStatus.OK
    path = Path(source.frame_paths[0])
    stat = path.stat()
    cv2.imwrite(str(path), cv2.flip(tight_crop[0], 1))  # other pixels, same name, size and time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert processor.load(source) is None  # re-aligned, its crops no longer match the entry's checksum
    redone = processor.process(source)
    assert redone.status == SequenceStatus.OK and not redone.cached
    path.unlink()
    assert processor.load(source) is None
    gone = processor.process(source)
    assert gone.status != SequenceStatus.OK and gone.record is None


def test_images_with_a_crops_pixels_keep_their_crops(tight_crop, ck48_cfg, tmp_path: Path) -> None:
    big = cv2.resize(tight_crop[0], (128, 128), interpolation=cv2.INTER_CUBIC)  # 128^2 > 96^2 pixels
    source = _image(tmp_path, big)
    processor = SequenceProcessor(ck48_cfg, tmp_path / "cache")
    outcome = processor.process(source)
    assert outcome.status == SequenceStatus.OK
    entry = _aligned_entry(processor, source, ck48_cfg)
    assert not entry.meta.get(DERIVED) and np.array_equal(entry.arrays["aligned"], outcome.record.aligned)
