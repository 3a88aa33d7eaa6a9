"""fan backend: face-alignment's FAN heatmap network from a local weights file, dlib's detector for boxes (no
SFD download), and the shared detect-then-track logic (one FAN pass per tracked frame)."""

from __future__ import annotations

from stages.preprocess.landmarks.base import LandmarkConfig
from stages.preprocess.landmarks.dlib import build_detector
from stages.preprocess.landmarks.dlib import warm_up_detector as warm_up
from stages.preprocess.landmarks.fan.network import FanPredictor, load_fan_network
from stages.preprocess.landmarks.tracker import TrackingLandmarker


def build(cfg: LandmarkConfig) -> TrackingLandmarker:
    """A FAN landmarker; MissingWeightsError when ``cfg.fan_weights`` is unset or absent."""
    predictor = FanPredictor(load_fan_network(cfg.fan_weights), flip=cfg.fan_flip)
    return TrackingLandmarker("fan", cfg, build_detector(cfg), predictor)


__all__ = ["build", "warm_up"]
