"""Configs of the model family, model inputs, augmentation and training (pydantic v2, all defaulted).

Model-specific settings that only one registered network understands go into ``AppearanceConfig.options`` /
``GeometryConfig.options`` (a free dict that the network's builder validates, see
:func:`stages.learning.models.registry.parse_options`), so that adding a network never needs a new field here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt


@dataclass(frozen=True)
class FrameMode:
    """One appearance input mode: which successful frames are stacked and how the network sees them.

    ``choose(ok, k)``: the successful frame indices ``ok`` (ascending, non-empty) and ``model.input.k`` -> the
    indices to stack, in channel order (oldest first); ``n_frames(k)``: how many that always is;
    ``per_frame``: each stacked frame is a sample of its own for the appearance network (shared weights,
    logits averaged over the frames) instead of one multi-channel input."""

    choose: Callable[[np.ndarray, int], np.ndarray]
    n_frames: Callable[[int], int]
    per_frame: bool = False


def _last_k(ok: np.ndarray, k: int) -> np.ndarray:
    chosen = ok[-k:]
    return np.concatenate([np.repeat(chosen[:1], k - len(chosen)), chosen])  # the earliest repeated in front


FRAME_MODES: dict[str, FrameMode] = {
    "peak": FrameMode(lambda ok, k: ok[-1:], lambda k: 1),
    "last_k": FrameMode(_last_k, lambda k: k),
    "peak_neutral": FrameMode(lambda ok, k: np.array([ok[0], ok[-1]]), lambda k: 2),
    "frames": FrameMode(_last_k, lambda k: k, per_frame=True),
}
"""THE table of appearance input modes (``model.input.appearance``): the config's choices, the frame selection
(:func:`stages.learning.inputs.streams.select_frames`) and the channel count
(:func:`stages.learning.models.frames_for`) all read it."""

AppearanceMode = Literal[tuple(FRAME_MODES)]  # type: ignore[valid-type]


class ModelInputConfig(BaseModel):
    """How a :class:`~stages.record.SequenceRecord` becomes the appearance tensor ``[C, size, size]``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    appearance: AppearanceMode = Field(
        "peak_neutral",
        description="peak: the last successful frame; last_k: the last k successful frames stacked as "
        "channels (oldest first, peak last); frames: the same k frames, but each one a sample of its own for "
        "the appearance network (shared weights) whose logits are averaged over the frames (sequences without "
        "a neutral frame, such as CK+48); peak_neutral: (first successful frame, peak) as channels -- the "
        "default: with the subject's own neutral face beside the peak the CNN need not tell identity from "
        "expression (CK+-sized demo, skipnet alone: 93.3% vs 52.4% with last_k; BENCHMARKS.md).",
    )
    k: int = Field(3, ge=1, description="Frames taken by appearance='last_k' and 'frames'.")
    train_frames: Literal["all", "one"] = Field(
        "all",
        description="appearance='frames' in training: 'all' averages the logits of all k frames (as in "
        "evaluation); 'one' feeds one randomly drawn frame per sequence and step (each frame a training sample "
        "of its own, k times cheaper). Evaluation and prediction always average all k.",
    )
    size: int = Field(
        64, ge=8, description="Model input side in pixels; aligned crops are resized from the cache's size."
    )
    mask: Literal["none", "face"] = Field(
        "none",
        description="none: the whole aligned crop; face: only the face region (jaw line, brows and forehead, "
        "from each frame's landmarks), the rest set to the face's mean grey, so that the background and "
        "framing of a recording session are not learnt with its classes (stages.learning.inputs.face_mask).",
    )


class AppearanceConfig(BaseModel):
    """The appearance network (a name in the registry) and its common hyper-parameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field("skipnet", description="Registered appearance network (see stages.learning.models.list_models).")
    channels: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64, 96, 128],
        min_length=1,
        description="Output channels of each conv block; each block halves the spatial size.",
    )
    convs_per_block: int = Field(1, ge=1, description="3x3 convolutions per block (skipnet).")
    skip_dim: int = Field(64, ge=1, description="Width of each block's skip FC layer (skipnet).")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="Dropout in front of the classifier.")
    normalize: Literal["fixed", "per_sample", "rank"] = Field(
        "fixed",
        description="Input normalisation inside the network: fixed = (x - 0.5) / 0.25 on inputs in [0, 1]; "
        "per_sample = each sample and channel to zero mean, unit std (cancels brightness augmentation); rank = "
        "each pixel to its quantile within its sample and channel (histogram equalisation: any increasing change "
        "of intensities, such as another camera's contrast or gamma, gives the same input).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Settings only the named network understands (validated by it)."
    )
    init: str | None = Field(
        None,
        description="Start the appearance network from a trained one: a ready model's name (fer2013) or a model "
        "folder; its weights and the classifier rows of the classes both share (by alias). The network's settings "
        "above must be the source's. None: a fresh initialisation.",
    )


class GeometryConfig(BaseModel):
    """The geometry (landmark-trajectory) network."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field("trajnet", description="Registered geometry network: trajnet (shared per step) or flat.")
    hidden: int = Field(128, ge=1, description="Width of trajnet's per-step MLP.")
    layers: int = Field(2, ge=1, description="Layers of trajnet's per-step MLP / temporal convs.")
    temporal_kernel: int = Field(
        1,
        ge=1,
        description="Kernel over time of trajnet's layers: 1 = the same MLP on every step independently; "
        "odd k > 1 = 1-D convs over time (still shared over steps, any length).",
    )
    flat_hidden: list[PositiveInt] = Field(
        default_factory=lambda: [100, 600],
        min_length=1,
        description="FC widths of the DTAGN-style 'flat' network on the flattened fixed-length trajectory.",
    )
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="Dropout in front of the classifier.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Settings only the named network understands (validated by it)."
    )


class ModelConfig(BaseModel):
    """Which streams exist and how they are fused (DTAGN / Verma et al. ICIP 2019)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    streams: Literal["appearance", "geometry", "fused"] = Field(
        "fused", description="appearance only, geometry only, or both fused."
    )
    appearance: AppearanceConfig = Field(default_factory=AppearanceConfig)
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    input: ModelInputConfig = Field(default_factory=ModelInputConfig)
    fusion: Literal["sum", "weighted", "learned", "mixture"] = Field(
        "sum",
        description="sum / weighted / learned: fused logits = w * appearance + (1 - w) * geometry (sum: w = 0.5; "
        "weighted: w = fusion_weight; learned: w = sigmoid(a learnable scalar) starting at fusion_weight). "
        "mixture: fused probabilities = w * p_appearance + (1 - w) * p_geometry, w = fusion_weight, so one "
        "stream's confident 'no' cannot veto the other's 'yes'.",
    )
    fusion_weight: float = Field(0.5, gt=0.0, lt=1.0, description="Weight w of the appearance logits.")
    test_flip: bool = Field(
        False,
        description="At evaluation and prediction, average each output's logits over the input and its mirror "
        "image (crops flipped left-right, landmark trajectories mirrored and re-indexed); training is unchanged.",
    )
    joint_loss: bool = Field(
        True,
        description="DTAGN joint fine-tuning: cross-entropy on appearance, geometry and fused logits summed; "
        "otherwise only on the predicting output. The fused output predicts either way.",
    )


class AugmentConfig(BaseModel):
    """Training-time augmentation on batches (never applied at validation, test or prediction time)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    flip: bool = Field(True, description="Random horizontal flip of crops and trajectories (p = 0.5).")
    rotate_deg: float = Field(10.0, ge=0.0, description="Max random rotation of crops, degrees.")
    scale: float = Field(0.1, ge=0.0, lt=1.0, description="Max random relative zoom of crops (1 +- scale).")
    shift: float = Field(0.08, ge=0.0, lt=1.0, description="Max random shift of crops, fraction of the side.")
    brightness: float = Field(0.2, ge=0.0, lt=1.0, description="Max random relative gain of crops (1 +- b).")
    contrast: float = Field(
        0.0, ge=0.0, lt=1.0, description="Max random relative contrast about each crop's mean (1 +- c)."
    )
    gamma: float = Field(
        0.0, ge=0.0, lt=1.0, description="Max random log-gamma: intensities x -> x ** exp(+- gamma) (lighting)."
    )
    blur: float = Field(
        0.0, ge=0.0, description="Max std of a random Gaussian blur of crops, in pixels of the model input."
    )
    erase: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability of random erasing (Zhong et al. 2017): one rectangle of 2-40 % of the crop, aspect "
        "0.3-3.3, set to the crop's mean, so no single region (the mouth) can carry the decision alone.",
    )
    traj_noise: float = Field(
        0.0, ge=0.0, description="Std of Gaussian noise added to trajectories, in trajectory units."
    )


class TrainConfig(BaseModel):
    """Optimisation, early stopping and augmentation for :func:`stages.learning.training.fit.fit`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(40, ge=1, description="Maximum epochs.")
    batch_size: int = Field(32, ge=2, description="Training batch size (sequences).")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="constant, or cosine decay from lr to 0 over `epochs`."
    )
    patience: int = Field(
        10, ge=1, description="Stop after this many epochs without a better validation accuracy / loss."
    )
    val_fraction: float = Field(
        0.15,
        ge=0.0,
        lt=1.0,
        description="Fraction of training subjects the CV runner holds out for validation.",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="Label smoothing of every cross-entropy term (0 = plain one-hot targets)."
    )
    class_weighted: bool = Field(
        False, description="Weight cross-entropy by inverse class frequency of the training labels."
    )
    ema_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Exponential moving average of the weights (and BN statistics) per step with this decay, "
        "warmed up as min(decay, (1 + n) / (10 + n)) after n steps; the average is what validation picks the epoch "
        "with and what is kept (0 = off).",
    )
    precision: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="Arithmetic of the training and validation forward passes: float32, bfloat16 autocast "
        "(torch.autocast; weights and optimiser stay float32; the model predicts in bfloat16 only where the device "
        "computes it natively), or auto: bfloat16 where the device computes it natively (a CPU with AVX512-BF16 or "
        "AMX, as oneDNN reports; a CUDA GPU with bf16), else float32. bfloat16 trains the CK+48 model about 1.5x as "
        "fast on such a CPU; on a CPU without (AVX2 only) it is emulated and about 15x slower than float32.",
    )
    ensemble: int = Field(
        1,
        ge=1,
        le=32,
        description="Networks per CV fold and per `seqfer train` model, their class probabilities averaged: member "
        "k is the whole run at seed + k (its validation subjects, initialisation, shuffling and augmentation), so "
        "member 0 is the single-network run. Training and appearance prediction cost this many times as much.",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    threads: int = Field(1, ge=1, description="torch.set_num_threads inside fit (restored afterwards).")
    workers: int = Field(
        1,
        ge=1,
        exclude=True,
        description="Data-parallel processes of each `seqfer train` network: 1 trains in this process; N > 1 runs a "
        "Ray Train TorchTrainer with N workers (DDP over gloo on CPUs, NCCL on GPUs; `train.threads` CPUs each) on the "
        "Ray cluster `ray.address` names, each worker computing its slice of every batch, checkpointed per epoch so a "
        "lost worker resumes from the last one. `seqfer cv` and `compare` ignore it (one fold per Ray worker). Not "
        "part of the config's serialised form or hash: a different count trains differently only in float "
        "summation order, dropout masks and BatchNorm statistics.",
    )
