"""One input's prediction: its status, probabilities, frames and timeline, and the flat row it becomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.predict.inputs import PredictInput
from stages.preprocess.decode import SequenceSource
from stages.record import LandmarkArrays, SequenceRecord, SequenceStatus

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class PredictionResult:
    """One input's prediction. ``probabilities`` (class -> p, summing to 1) is None unless status is ok.

    ``n_frames``: frames read (after frame selection); ``face_ratio``: fraction of them with a face.
    ``timeline``: window mode only, one row per window (window_start, window_end in seconds, status,
    n_frames, face_ratio, label, confidence, p_<class>). ``record`` / ``landmarks`` are kept on request
    (``keep=True``) for pictures.
    """

    input: str
    status: SequenceStatus
    reason: str = ""
    probabilities: dict[str, float] | None = None
    n_frames: int = 0
    face_ratio: float = 0.0
    true_label: str | None = None
    timeline: pd.DataFrame | None = None
    seconds: float = 0.0
    source: SequenceSource | None = None
    record: SequenceRecord | None = None
    landmarks: LandmarkArrays | None = None

    @property
    def ok(self) -> bool:
        return self.status == SequenceStatus.OK

    @property
    def label(self) -> str | None:
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confidence(self) -> float | None:
        return None if not self.probabilities else float(max(self.probabilities.values()))

    def row(self, classes: list[str]) -> dict:
        """Flat result row: input, status, label, confidence, p_<class>..., n_frames, face_ratio, reason
        (+ true_label when known). Missing values are NaN (probabilities) or '' (text)."""
        probs = self.probabilities or {}
        row = {
            "input": self.input,
            "status": self.status,
            "label": self.label or "",
            "confidence": self.confidence if self.confidence is not None else float("nan"),
        }
        row.update({f"p_{c}": float(probs[c]) if c in probs else float("nan") for c in classes})
        row.update(
            {"n_frames": int(self.n_frames), "face_ratio": round(float(self.face_ratio), 4), "reason": self.reason}
        )
        if self.true_label is not None:
            row["true_label"] = self.true_label
        return row


def error_result(pin: PredictInput, exc: Exception) -> PredictionResult:
    """The result of an input whose prediction raised (a bug or a library crash): status ``error``."""
    return PredictionResult(pin.name, SequenceStatus.ERROR, f"{type(exc).__name__}: {exc}")


def finished(result: PredictionResult, pin: PredictInput, seconds: float) -> PredictionResult:
    """``result`` with what every result carries: the input's true label and source, the seconds it took."""
    result.true_label = pin.true_label
    result.source = pin.source
    result.seconds = seconds
    return result
