"""Load a model once, predict many: the Python API behind `seqfer predict` (no Ray in here).

::

    from pipeline.predict.predictor import Predictor
    p = Predictor.load("runs/demo/model")        # a model folder, a CV run folder (fold ensemble) or OUTPUT_DIR
    r = p.predict("clip.mp4")                    # PredictionResult: .status .label .confidence .probabilities
    rows = [x.row(p.classes) for x in p.predict_many(["videos/*.mp4", "frames_dir/", "face.jpg"])]
    r = p.predict("long.mp4", window=2.0)        # r.timeline: one row per 2 s window (stride 1 s)
    rs = p.predict_batch(["a.jpg", "b.jpg"])     # one network call; bit-identical to predict() of each

Prediction runs exactly the training preprocessing: the input becomes a ``SequenceSource``,
``stages.preprocess.sequence.SequenceProcessor`` (with the model's stored SequenceConfig) makes its record and
``stages.learning.inputs.extras.model_inputs`` its tensors; fold models' probabilities are averaged. A single image is a
one-frame sequence: its trajectory is all zeros, so the geometry stream sees no motion and the appearance
stream decides. A model trained on single images only (FER2013's ready model; ``ModelBundle.image_model``) labels a
video, frame folder or window by the mean of its frames' probabilities, each frame with a face scored as an image
(:meth:`Predictor.record_probabilities`), unless the input names its peak frame (``PredictInput.peak_named``: a
manifest row of CK+, Oulu-CASIA or class folders, whose label belongs to that frame): then that frame. A model
trained on sequences sees the sequence, as in training. Window mode holds the whole input's aligned crops in memory
(112 px grey crops: 12.5 KB per frame, ~1.3 GB per hour of 30 fps video). Bad inputs never raise: they come back
with a status (``unreadable``, ``no_face``, ``low_face_ratio``, ``too_short``, ``failed``, ``error``) and a reason.

Importing this module imports no torch (the network side is imported when a Predictor is made), so that
`seqfer predict`'s driver, which hands many inputs to Ray workers, starts without it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pipeline.model_folder.load import ModelBundle, load_model_bundle
from pipeline.predict.inputs import PredictInput, input_from_path, resolve_inputs
from pipeline.predict.prediction import PredictionResult, error_result, finished
from pipeline.predict.windows import timeline_row, window_bounds, window_record
from stages.errors import StageError
from stages.preprocess.decode import SequenceSource, select_indices
from stages.preprocess.sequence import SequenceConfig, SequenceProcessor
from stages.preprocess.sequence_status import sequence_status  # the processor's own ok / no_face / ... rule
from stages.record import SequenceRecord, SequenceStatus

MANY_BATCH = 64
"""Inputs :meth:`Predictor.predict_many` predicts with one :meth:`Predictor.predict_batch` call."""

FRAME_CHUNK = 256
"""Frames per network call when a model trained on single images scores a longer input frame by frame."""

NON_FINITE = "the model gave non-finite probabilities for this input (damaged or diverged weights)"


class Predictor:
    """A loaded model (or fold ensemble) plus one :class:`SequenceProcessor`: build once, call many times.

    ``cache_dir``: where processed sequences are cached (None: nothing is written). Not thread-safe (the
    landmarker is not); use one Predictor per process or Ray worker. The networks run in bfloat16 where the model
    trained in it and ``device`` computes it natively (about twice float32's pace on such CPUs), else in float32
    (:func:`~stages.learning.training.precision.inference_precision`), in fixed-shape chunks
    (:func:`~stages.learning.training.predict.predict_proba`).
    """

    def __init__(self, bundle: ModelBundle, cache_dir: Path | str | None = None, device: str = "cpu") -> None:
        from stages.learning.training.precision import inference_precision

        self.bundle = bundle
        self.device = device
        self.precision = inference_precision(bundle.trained_precision, device)
        bundle.models  # noqa: B018 - the networks load now: a model whose weights do not fit fails here, not mid-batch
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.processor = SequenceProcessor(bundle.sequence, self.cache_dir)
        self._window_processor: SequenceProcessor | None = None

    @classmethod
    def load(
        cls,
        path: Path | str,
        overrides: list[str] | None = None,
        cache_dir: Path | str | None = None,
        device: str = "cpu",
    ) -> Predictor:
        """Load a model folder, CV run folder (ensemble) or OUTPUT_DIR; ``overrides`` are ``--set`` strings."""
        return cls(load_model_bundle(path, overrides), cache_dir=cache_dir, device=device)

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    @property
    def sequence_config(self) -> SequenceConfig:
        return self.bundle.sequence

    # -- model ---------------------------------------------------------------------------------------------------
    def probabilities(self, appearance: np.ndarray, trajectory: np.ndarray) -> np.ndarray:
        """[N, K] float64 class probabilities, the mean over the bundle's models (a model folder's ensemble
        members, or every member of every fold of a CV run folder). :class:`StageError` when any is not finite."""
        from stages.learning.training.predict import ensemble_proba

        probs = ensemble_proba(
            self.bundle.models, (appearance, trajectory), device=self.device, precision=self.precision
        )
        if not np.isfinite(probs).all():  # never an ok row without probabilities
            raise StageError(NON_FINITE)
        return probs

    def record_inputs(self, record: SequenceRecord) -> tuple[np.ndarray, np.ndarray]:
        """A record's model inputs: appearance [1, C, S, S] (stacked frames + the network's extras),
        trajectory [1, L, 68, 2] -- what ``pipeline.data.labelled.load_labelled_data`` builds for training."""
        return self._inputs([record])

    def record_probabilities(self, record: SequenceRecord) -> np.ndarray:
        """[K] float64 class probabilities of one record (a whole input or a window). A model trained on sequences
        sees the record's model input. A model trained on single images (``ModelBundle.image_model``) sees each
        frame with a face as an image of its own, and the probabilities are averaged over those frames (in chunks
        of :data:`FRAME_CHUNK`): it knows no sequences, so the last frame alone would label a whole video. (An
        input that names its peak frame, ``PredictInput.peak_named``, is scored by that frame instead: the caller
        gives it :meth:`record_inputs`.) :class:`StageError` when the model's output is not finite."""
        if not self._frame_by_frame(record):
            return self.probabilities(*self.record_inputs(record))[0]
        return self.frame_probabilities(record)[record.success].mean(axis=0)

    def frame_probabilities(self, record: SequenceRecord) -> np.ndarray:
        """[T, K] float64: each frame of ``record`` with a face scored as a one-frame record (an image), NaN rows for
        the others; the network runs on :data:`FRAME_CHUNK` frames at a time (the same values whatever the chunk).
        :class:`StageError` when the model's output is not finite."""
        out = np.full((len(record.frame_indices), len(self.classes)), np.nan)
        faces = np.flatnonzero(record.success)
        for start in range(0, len(faces), FRAME_CHUNK):
            chunk = faces[start : start + FRAME_CHUNK]
            frames = [window_record(record, chunk[i : i + 1], self.bundle.sequence) for i in range(len(chunk))]
            out[chunk] = self.probabilities(*self._inputs(frames))
        return out

    def _frame_by_frame(self, record: SequenceRecord) -> bool:
        """Whether ``record`` is scored frame by frame (see :meth:`record_probabilities`)."""
        return self.bundle.image_model and len(record.frame_indices) > 1

    def _inputs(self, records: list[SequenceRecord]) -> tuple[np.ndarray, np.ndarray]:
        from stages.learning.inputs.extras import model_inputs

        appearance, trajectory, _ = model_inputs(records, self.bundle.model_input, self.bundle.extras)
        return appearance, trajectory

    def model_inputs(self, item: str | Path | SequenceSource | PredictInput) -> tuple[np.ndarray, np.ndarray]:
        """The tensors the model would see for ``item``; :class:`StageError` when it cannot be processed."""
        pin = self._as_input(item)
        if pin.source is None:
            raise StageError(f"{pin.name}: {pin.problem}")
        outcome = self.processor.process(pin.source)
        if outcome.record is None:
            raise StageError(f"{pin.name}: {outcome.status}: {outcome.reason}")
        return self.record_inputs(outcome.record)

    # -- prediction ----------------------------------------------------------------------------------------------
    def predict(
        self,
        item: str | Path | SequenceSource | PredictInput,
        *,
        window: float | None = None,
        stride: float | None = None,
        keep: bool = False,
    ) -> PredictionResult:
        """Predict one input (a path to a video, image or frame folder, or a source). Never raises for a bad
        input. ``window`` (seconds) switches to sliding windows with ``stride`` (default window / 2)."""
        for name, value in (("window", window), ("stride", stride)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise StageError(f"{name} {value}: must be a positive number of seconds")
        if window is None:
            return self.predict_batch([item], keep=keep)[0]
        start = time.perf_counter()
        pin = self._as_input(item)
        try:
            if pin.source is None:
                result = PredictionResult(pin.name, SequenceStatus.UNREADABLE, pin.problem)
            else:
                step = window / 2 if stride is None else stride
                result = self._predict_windows(pin, float(window), float(step), keep)
        except Exception as exc:  # a bug or a library crash on one input must not stop a batch
            result = error_result(pin, exc)
        return finished(result, pin, time.perf_counter() - start)

    def predict_batch(
        self, items: Sequence[str | Path | SequenceSource | PredictInput], *, keep: bool = False
    ) -> list[PredictionResult]:
        """Predict whole inputs (no windows), one result per item in order, with one network call for all of them.

        Each input is preprocessed on its own; the model inputs of those that have one are stacked and go through
        :func:`~stages.learning.training.predict.ensemble_proba` at once, which runs the network in chunks of one
        fixed shape, so every probability is bit-identical to :meth:`predict` of that input alone (whatever the
        batch's size or its other inputs). Memory: the batch's model inputs (~27 KB per 48 px input of 3
        frames), plus its records when ``keep``. Never raises for a bad input.
        """
        pins = [self._as_input(item) for item in items]
        results: list[PredictionResult] = []
        staged: list[tuple[int, np.ndarray, np.ndarray]] = []  # (position, appearance [1, ...], trajectory [1, ...])
        for i, pin in enumerate(pins):
            start = time.perf_counter()
            try:
                result, arrays = self._prepare_whole(pin, keep)
            except Exception as exc:  # a bug or a library crash on one input must not stop a batch
                result, arrays = error_result(pin, exc), None
            if arrays is not None:
                staged.append((i, *arrays))
            results.append(finished(result, pin, time.perf_counter() - start))
        if staged:
            start = time.perf_counter()
            self._score(results, pins, staged)
            share = (time.perf_counter() - start) / len(staged)
            for i, _app, _traj in staged:
                results[i].seconds += share
        return results

    def predict_many(
        self,
        items: Iterable[str | Path | SequenceSource | PredictInput],
        *,
        window: float | None = None,
        stride: float | None = None,
    ) -> list[PredictionResult]:
        """Predict every input in order; strings are expanded like the CLI's (globs, folders, manifests). Without
        ``window``, :data:`MANY_BATCH` inputs go through :meth:`predict_batch` at a time."""
        inputs: list[PredictInput] = []
        for item in items:
            inputs += resolve_inputs([item]) if isinstance(item, (str, Path)) else [self._as_input(item)]
        if window is not None:
            return [self.predict(pin, window=window, stride=stride) for pin in inputs]
        return [r for i in range(0, len(inputs), MANY_BATCH) for r in self.predict_batch(inputs[i : i + MANY_BATCH])]

    # -- internals -----------------------------------------------------------------------------------------------
    @staticmethod
    def _as_input(item: str | Path | SequenceSource | PredictInput) -> PredictInput:
        if isinstance(item, PredictInput):
            return item
        if isinstance(item, SequenceSource):
            kind = "video" if item.video_path else "frames"
            return PredictInput(item.sequence_id, kind, item, peak_named=item.peak_index is not None)
        return input_from_path(item)

    def _as_dict(self, probs: np.ndarray) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, probs, strict=True)}

    def _prepare_whole(
        self, pin: PredictInput, keep: bool
    ) -> tuple[PredictionResult, tuple[np.ndarray, np.ndarray] | None]:
        """An input preprocessed: its result so far (status, frames, face ratio) and its model inputs, None when
        it has none (unreadable, no face, ... or inputs that cannot be built: status ``failed``) or was scored here,
        frame by frame (its probabilities set)."""
        if pin.source is None:
            return PredictionResult(pin.name, SequenceStatus.UNREADABLE, pin.problem), None
        outcome = self.processor.process(pin.source)
        result = PredictionResult(
            pin.name, outcome.status, outcome.reason, n_frames=outcome.n_frames, face_ratio=outcome.face_ratio
        )
        if keep:
            result.record, result.landmarks = outcome.record, outcome.landmark_arrays
        if outcome.record is None:
            return result, None
        try:
            if not pin.peak_named and self._frame_by_frame(outcome.record):  # scored here, not stacked
                result.probabilities = self._as_dict(self.record_probabilities(outcome.record))
                return result, None
            return result, self.record_inputs(outcome.record)
        except StageError as exc:
            result.status, result.reason = SequenceStatus.FAILED, str(exc)
            return result, None

    def _score(
        self,
        results: list[PredictionResult],
        pins: list[PredictInput],
        staged: list[tuple[int, np.ndarray, np.ndarray]],
    ) -> None:
        """Fill the probabilities of the ``staged`` results: one stacked network call; when it fails (or gives a
        wrong shape), one call per input, so that only the input at fault gets status ``failed`` or ``error``."""
        from stages.learning.training.predict import ensemble_proba

        try:
            appearance = np.concatenate([app for _, app, _ in staged])
            trajectory = np.concatenate([traj for _, _, traj in staged])
            probs = ensemble_proba(
                self.bundle.models, (appearance, trajectory), device=self.device, precision=self.precision
            )
            stacked_ok = probs.shape == (len(staged), len(self.classes))
        except Exception:  # noqa: BLE001 - retried per input below, where the fault is reported
            stacked_ok = False
        for row, (i, app, traj) in enumerate(staged):
            try:
                p = probs[row] if stacked_ok else self.probabilities(app, traj)[0]
                if not np.isfinite(p).all():
                    raise StageError(NON_FINITE)
                results[i].probabilities = self._as_dict(p)
            except StageError as exc:
                results[i].status, results[i].reason = SequenceStatus.FAILED, str(exc)
            except Exception as exc:  # a bug or a library crash on one input must not stop a batch
                results[i] = finished(error_result(pins[i], exc), pins[i], results[i].seconds)

    def _full_processor(self) -> SequenceProcessor:
        """Processes every frame with no face-ratio gate (windows apply the gate each), same landmarker."""
        if self._window_processor is None:
            seq = self.bundle.sequence
            full = seq.model_copy(
                update={"frames": seq.frames.model_copy(update={"mode": "all"}), "min_face_ratio": 0.0, "min_frames": 1}
            )
            self._window_processor = SequenceProcessor(full, self.cache_dir, landmarker=self.processor.landmarker)
        return self._window_processor

    def _window_frame_probabilities(self, record: SequenceRecord | None) -> tuple[np.ndarray | None, str]:
        """(an image model's :meth:`frame_probabilities` of the whole ``record``, why they could not be computed):
        overlapping windows then share each frame's network call. (None, "") for a sequence model or no record."""
        if not self.bundle.image_model or record is None or not record.success.any():
            return None, ""
        try:
            return self.frame_probabilities(record), ""
        except StageError as exc:
            return None, str(exc)

    def _predict_windows(self, pin: PredictInput, window: float, stride: float, keep: bool) -> PredictionResult:
        if window <= 0 or stride <= 0:
            raise StageError(f"window ({window} s) and stride ({stride} s) must be positive")
        seq = self.bundle.sequence
        outcome = self._full_processor().process(pin.source)
        lm = outcome.landmark_arrays
        if lm is None:  # unreadable: nothing decoded
            return PredictionResult(pin.name, outcome.status, outcome.reason)
        timestamps, success = lm.timestamps, lm.success
        steps = np.diff(timestamps)
        frame_step = float(np.median(steps)) if len(steps) else 1.0 / seq.frames.fps
        bounds = window_bounds(timestamps, window, stride, frame_step)
        frames, frames_error = self._window_frame_probabilities(outcome.record)
        rows, ok_probs = [], []
        for start, end, positions in zip(bounds.starts, bounds.ends, bounds.members, strict=True):
            sel = positions[select_indices(len(positions), None, seq.frames)] if len(positions) else positions
            status, reason = sequence_status(success[sel], seq)
            probs = None
            if status == SequenceStatus.OK and outcome.record is not None:
                try:
                    if frames_error:
                        raise StageError(frames_error)
                    if frames is not None:  # an image model: the mean of the window's frames, each scored once
                        probs = frames[sel][outcome.record.success[sel]].mean(axis=0)
                    else:
                        probs = self.record_probabilities(window_record(outcome.record, positions, seq))
                    ok_probs.append(probs)
                except StageError as exc:
                    status, reason = SequenceStatus.FAILED, str(exc)
            rows.append(timeline_row((start, end), status, reason, success[sel], probs, self.classes))
        import pandas as pd  # only for a windowed timeline: a worker of single images never loads it (~0.35 s)

        result = PredictionResult(
            pin.name,
            SequenceStatus.OK,
            "",
            n_frames=len(success),
            face_ratio=float(success.mean()) if len(success) else 0.0,
            timeline=pd.DataFrame(rows),
        )
        if ok_probs:
            result.probabilities = self._as_dict(np.mean(ok_probs, axis=0))
        else:
            status, reason = sequence_status(success, seq)
            failed = [r["reason"] for r in rows if r["status"] == SequenceStatus.FAILED]
            if status == SequenceStatus.OK and failed:  # windows had faces but no usable model output
                status, reason = SequenceStatus.FAILED, failed[0]
            elif status == SequenceStatus.OK:
                status, reason = (
                    SequenceStatus.LOW_FACE_RATIO,
                    (f"no {window:g} s window has a face in at least {seq.min_face_ratio:g} of its frames"),
                )
            result.status, result.reason = status, reason
        if keep:
            result.record, result.landmarks = outcome.record, lm
        return result
