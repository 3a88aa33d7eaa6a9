"""The cache keys of a sequence's three levels (:func:`~stages.preprocess.cache.stage_keys`'s chain) from its
source and a :class:`~stages.preprocess.sequence.SequenceConfig`.

What each level's key holds: ``landmarks`` the source's fingerprint (paths, sizes, mtimes), the frame selection
and peak index, the landmark config and the align colour (frames are decoded in it); ``aligned`` the align config;
``trajectory`` the trajectory config. :class:`KeyMaker` serialises a config's parts once and splices them into
every source's key text, so a run's 28,709 lookups cost ~15 us each instead of ~80 us, with bit-identical keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stages.preprocess.cache import source_fingerprint, stage_keys_json
from stages.preprocess.cache_format import canonical_json
from stages.preprocess.decode import SequenceSource

if TYPE_CHECKING:
    from stages.preprocess.sequence import SequenceConfig

VIDEO_TIMES = "pts-times"
"""Part of a video's landmarks key: its timestamps come from the frames' presentation times (entries made when
they were index / average fps are not reused)."""
CHECKED_PROVIDED = "checked-landmarks"
"""Part of the provided backend's landmarks key: its points pass the landmark checks (entries from before those
checks may hold degenerate points marked as faces, and are not reused)."""


def sequence_keys(source: SequenceSource, cfg: SequenceConfig) -> dict[str, str]:
    """Cache keys of the three levels for one source (stats its files; decodes nothing).

    Frames are decoded in the align colour and landmarks found on them, so that colour is part of the
    landmarks level. The pixel limit is not part of any key: it decides only whether a source fails, and a
    failure to read is never cached. Many keys with one config: :class:`KeyMaker` (the same keys, the config
    serialised once)."""
    return KeyMaker(cfg).keys(source)


class KeyMaker:
    """:func:`sequence_keys` for one config: its parts of the keys are serialised once, at construction (a config
    changed afterwards needs a new maker), and spliced into each source's (:func:`~stages.preprocess.cache.
    stage_keys_json`; ~15 us a source against ~80 us when every key serialises the config again)."""

    def __init__(self, cfg: SequenceConfig) -> None:
        self._frames = canonical_json(cfg.frames.model_dump(mode="json", exclude={"max_pixels"}))
        landmarks: tuple = (cfg.landmarks, cfg.align.color)
        self._landmarks = canonical_json(landmarks)
        self._landmarks_provided = canonical_json((*landmarks, CHECKED_PROVIDED))
        self._provided = cfg.landmarks.backend == "provided"
        self._align, self._trajectory = canonical_json(cfg.align), canonical_json(cfg.trajectory)

    def keys(self, source: SequenceSource) -> dict[str, str]:
        """The three levels' keys of ``source`` (see :func:`sequence_keys`)."""
        fingerprint = canonical_json(source_fingerprint(source.frame_paths, source.video_path))
        peak = source.peak_index
        peak_json = "null" if peak is None else str(peak) if type(peak) is int else canonical_json(peak)
        video = f",{canonical_json(VIDEO_TIMES)}" if source.video_path is not None else ""
        frames = f"[{self._frames},{peak_json}{video}]"  # the tuple (frames config, peak index[, VIDEO_TIMES])
        landmarks = self._landmarks_provided if self._provided else self._landmarks
        return stage_keys_json(fingerprint, frames, landmarks, self._align, self._trajectory)
