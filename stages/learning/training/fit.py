"""Training, prediction and checkpoints of the two-stream model: pure torch, no Ray, no run folders.

- :func:`fit`: AdamW, (joint) cross-entropy, augmentation on training batches only, early stopping and
  best-epoch selection on the VALIDATION set (accuracy, ties -> lower loss). Same seed -> same history
  and weights on CPU. Before it, a stream network with a first training stage (fn2en) gets it through
  :func:`pretrain`; both stages share one batch loop.
- :func:`predict_proba`: softmax of the predicting output, eval mode; independent of the batch size.
- :func:`save_checkpoint` / :func:`load_checkpoint`: one ``.safetensors`` file, config and classes in its
  metadata; never pickle.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from stages.atomic_io import atomic_path
from stages.errors import StageError
from stages.learning.augment import augment_batch
from stages.learning.models import ModelConfig, TrainConfig, TwoStream, build_model
from stages.learning.models.registry import Pretrainable

CHECKPOINT_FORMAT = "seqfer-checkpoint"
CHECKPOINT_VERSION = "1"


@dataclass
class ArrayDataset:
    """Model inputs of N sequences: ``appearance`` [N, C, S, S] float32 in [0, 1], ``trajectory``
    [N, L, 68, 2] float32, ``labels`` [N] int64 class indices; ``targets``: optional per-sequence arrays
    [N, ...] that only a network's first training stage reads (:class:`stages.learning.models.registry.Pretraining`)."""

    appearance: np.ndarray
    trajectory: np.ndarray
    labels: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = {len(self.appearance), len(self.trajectory), len(self.labels)}
        if len(n) != 1:
            raise StageError(
                f"dataset arrays disagree on N: appearance {len(self.appearance)}, trajectory "
                f"{len(self.trajectory)}, labels {len(self.labels)}"
            )
        for name, value in self.targets.items():
            if len(value) != len(self.labels):
                raise StageError(f"target {name!r} has {len(value)} rows for {len(self.labels)} sequences")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FitResult:
    """Result of :func:`fit`.

    ``model``: the best epoch's weights, eval mode. ``history``: one dict per epoch run with keys epoch
    (1-based), train_loss, train_acc (on augmented batches), val_loss, val_acc, lr (used in that epoch),
    seconds, and fusion_weight for fused models. ``best_epoch``: the 1-based epoch ``model`` holds.
    ``seconds``: wall time of the whole fit. ``pretrain_history``: one row per first-stage epoch of a
    network that has one (stream, epoch, loss, seconds; see :func:`pretrain`). ``precision``: the arithmetic the
    training forward passes used (``TrainConfig.precision`` resolved by :func:`resolve_precision`)."""

    model: TwoStream
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    pretrain_history: list[dict[str, float]] = field(default_factory=list)
    precision: str = "float32"


def _tensors(data: ArrayDataset | tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    app, traj = (data.appearance, data.trajectory) if isinstance(data, ArrayDataset) else data[:2]
    return (
        torch.as_tensor(np.asarray(app, dtype=np.float32), device=device),
        torch.as_tensor(np.asarray(traj, dtype=np.float32), device=device),
    )


def _stream_inputs(model: TwoStream, app: torch.Tensor, traj: torch.Tensor):
    return (app if model.appearance is not None else None, traj if model.geometry is not None else None)


@torch.no_grad()
def _evaluate(
    model: TwoStream,
    app: torch.Tensor,
    traj: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    batch_size: int,
    precision: str = "float32",
) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode; the forward pass in ``precision`` (resolved, as in training)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        sl = slice(start, start + batch_size)
        with _autocast(precision, app.device):  # the loss inside too: autocast runs cross-entropy in float32
            out = model(*_stream_inputs(model, app[sl], traj[sl]))
            loss = model.loss(out, y[sl], weight)
        total_loss += float(loss) * len(y[sl])
        correct += int((out[model.prediction_key].argmax(1) == y[sl]).sum())
    return total_loss / len(y), correct / len(y)


def _batches(rng: np.random.Generator, n: int, batch_size: int) -> list[np.ndarray]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm needs two)."""
    perm = rng.permutation(n)
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


def _class_weight(labels: np.ndarray, n_classes: int, device: str) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weight = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return torch.as_tensor(weight, dtype=torch.float32, device=device)


def _check_data(name: str, data: ArrayDataset, n_classes: int, model_cfg: ModelConfig) -> None:
    if data.appearance.ndim != 4 or data.appearance.shape[-1] != model_cfg.input.size:
        raise StageError(
            f"{name} appearance must be [N, C, {model_cfg.input.size}, {model_cfg.input.size}]; "
            f"got {list(data.appearance.shape)}"
        )
    if data.trajectory.ndim != 4 or data.trajectory.shape[2:] != (68, 2):
        raise StageError(f"{name} trajectory must be [N, L, 68, 2]; got {list(data.trajectory.shape)}")
    if len(data) and (data.labels.min() < 0 or data.labels.max() >= n_classes):
        raise StageError(f"{name} labels must lie in [0, {n_classes}); got {data.labels.min()}..{data.labels.max()}")


def ema_decay_at(decay: float, n_averaged: int) -> float:
    """The moving average's decay after ``n_averaged`` updates: ``min(decay, (1 + n) / (10 + n))``. Early on
    the average follows the weights closely instead of sitting near their initial values (a fixed 0.99 let an
    average of barely-trained weights win a small validation set at epoch 3 and be kept)."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def ema_warmup_avg_fn(decay: float):
    """``AveragedModel``'s multi_avg_fn for :func:`ema_decay_at`: averaged <- d * averaged + (1 - d) * current."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = ema_decay_at(decay, int(num_averaged))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's step count): the same blend, cast back
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * d + c * (1.0 - d))

    return update


def fit(
    model_cfg: ModelConfig,
    n_classes: int,
    train: ArrayDataset,
    val: ArrayDataset | None,
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
    resume_path: Path | None = None,
    resume_key: str = "",
    save_every_s: float = 0.0,
) -> FitResult:
    """Train a model from scratch and return the weights of the best VALIDATION epoch.

    Each epoch: shuffled batches of ``train`` (augmented), then ``val`` in eval mode. The best epoch has the
    highest validation accuracy, ties going to the lower validation loss (the training objective: joint and
    class-weighted as configured); training stops after ``cfg.patience`` epochs without a better one. With an
    empty or absent ``val`` there is no early stopping and the last epoch is kept (val_loss / val_acc are NaN).
    The test fold must never be passed as ``val``.
    ``seed`` fixes weight init, shuffling, dropout and augmentation; ``torch.set_num_threads(cfg.threads)``
    holds during the call. ``on_epoch`` receives each history row as it is produced.
    ``resume_path``: after every epoch the whole training state (model, optimizer, scheduler, epoch, history,
    best-so-far, every random generator) is saved there, as torchvision's reference train.py does; a call with
    a state file whose ``resume_key`` matches (the caller's key of this data and these settings) continues after
    its last epoch, with the result an uninterrupted run gives. A state file with another key is ignored.
    ``save_every_s`` > 0 writes the state only once that many seconds have passed since the last write (and after
    the final epoch): a killed run then repeats at most that much work, and short epochs do not pay ~30 ms each
    for the write.
    """
    if len(train) < 2:
        raise StageError(f"training needs at least 2 sequences; got {len(train)}")
    _check_data("train", train, n_classes, model_cfg)
    has_val = val is not None and len(val) > 0
    if has_val:
        _check_data("validation", val, n_classes, model_cfg)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            return _fit(
                model_cfg,
                n_classes,
                train,
                val if has_val else None,
                cfg,
                seed,
                device,
                on_epoch,
                resume_path,
                resume_key,
                save_every_s,
            )
    finally:
        torch.set_num_threads(previous_threads)


def _fit(
    model_cfg: ModelConfig,
    n_classes: int,
    train: ArrayDataset,
    val: ArrayDataset | None,
    cfg: TrainConfig,
    seed: int,
    device: str,
    on_epoch: Callable[[dict], None] | None,
    resume_path: Path | None = None,
    resume_key: str = "",
    save_every_s: float = 0.0,
) -> FitResult:
    start_all = last_save = time.perf_counter()
    init_seed, aug_seed, shuffle_seed = np.random.SeedSequence(seed).generate_state(3).tolist()
    torch.manual_seed(init_seed)
    aug_gen = torch.Generator().manual_seed(aug_seed)
    rng = np.random.default_rng(shuffle_seed)

    model = build_model(model_cfg, n_classes, int(train.appearance.shape[1]), int(train.trajectory.shape[1]))
    model.to(device)
    app, traj = _tensors(train, device)
    y = torch.as_tensor(train.labels, dtype=torch.long, device=device)
    pretrain_history = _pretrain_streams(model, app, traj, train.targets, cfg, seed, device)
    precision = resolve_precision(cfg.precision, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.lr_schedule == "cosine" else None
    weight = _class_weight(train.labels, n_classes, device) if cfg.class_weighted else None
    ema = None
    if cfg.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=ema_warmup_avg_fn(cfg.ema_decay), use_buffers=True)
    kept = model if ema is None else ema.module  # what validation judges and the best state holds

    if val is not None:
        v_app, v_traj = _tensors(val, device)
        v_y = torch.as_tensor(val.labels, dtype=torch.long, device=device)

    history: list[dict[str, float]] = []
    best_state, best_epoch, best_key, stale = None, 0, (-math.inf, -math.inf), 0
    first_epoch = 1
    saved = _load_train_state(resume_path, resume_key)
    if saved is not None:
        model.load_state_dict(saved["model"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None:
            sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        aug_gen.set_state(saved["aug_rng"])
        rng.bit_generator.state = saved["numpy_rng"]
        history, best_state, best_epoch = list(saved["history"]), saved["best_state"], int(saved["best_epoch"])
        best_key, stale, first_epoch = tuple(saved["best_key"]), int(saved["stale"]), int(saved["epoch"]) + 1
        if saved["stopped"]:
            first_epoch = cfg.epochs + 1
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        model.train()

        def batch_loss(b_idx: torch.Tensor) -> tuple[torch.Tensor, int]:
            b_app, b_traj = augment_batch(*_stream_inputs(model, app[b_idx], traj[b_idx]), cfg.augment, aug_gen)
            out = model(b_app, b_traj)
            loss = model.loss(out, y[b_idx], weight, cfg.label_smoothing)
            return loss, int((out[model.prediction_key].argmax(1) == y[b_idx]).sum())

        average = None if ema is None else lambda: ema.update_parameters(model)
        total_loss, correct, seen = _train_epoch(
            opt, rng, len(y), cfg.batch_size, device, batch_loss, average, precision
        )
        if sched is not None:
            sched.step()
        if val is not None:
            val_loss, val_acc = _evaluate(kept, v_app, v_traj, v_y, weight, max(cfg.batch_size, 128), precision)
        else:
            val_loss, val_acc = math.nan, math.nan
        row = {
            "epoch": epoch,
            "train_loss": total_loss / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
        }
        if model.is_fused:
            row["fusion_weight"] = float(model.fusion_weight().detach())
        row["seconds"] = time.perf_counter() - t0
        history.append(row)

        key = (val_acc, -val_loss) if val is not None else (epoch, 0.0)
        stop = False
        if key > best_key:
            best_key, best_epoch, stale = key, epoch, 0
            best_state = copy.deepcopy(kept.state_dict())
        else:
            stale += 1
            stop = stale >= cfg.patience
        if resume_path is not None and (stop or epoch == cfg.epochs or time.perf_counter() - last_save >= save_every_s):
            last_save = time.perf_counter()
            _save_train_state(
                resume_path,
                {
                    "key": resume_key,
                    "epoch": epoch,
                    "stopped": stop,
                    "model": model.state_dict(),
                    **({} if ema is None else {"ema": ema.state_dict()}),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else {},
                    "torch_rng": torch.get_rng_state(),
                    "aug_rng": aug_gen.get_state(),
                    "numpy_rng": rng.bit_generator.state,
                    "history": history,
                    "best_state": best_state,
                    "best_epoch": best_epoch,
                    "best_key": list(best_key),
                    "stale": stale,
                },
            )
        if on_epoch is not None:
            on_epoch(dict(row))
        if stop:
            break

    model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - start_all,
        pretrain_history=pretrain_history,
        precision=precision,
    )


def _save_train_state(path: Path, state: dict) -> None:
    """Write a training state atomically (torch.save of tensors and plain values, read back weights_only)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_train_state(path: Path | None, key: str) -> dict | None:
    """The training state at ``path`` when it exists, loads as plain data (``weights_only``: nothing arbitrary is
    unpickled) and has ``key``; else None (training starts from epoch 1)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign file: start over rather than fail the fold
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def _train_epoch(
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    n: int,
    batch_size: int,
    device: str,
    batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, int]],
    after_step: Callable[[], None] | None = None,
    precision: str = "float32",
) -> tuple[float, int, int]:
    """One epoch of optimisation over shuffled batches of ``n`` training rows (the one batch loop of both training
    stages): ``batch_loss(row indices on device) -> (loss, correct predictions)``, then a step of ``opt`` and
    ``after_step()``. ``precision`` ``bfloat16`` (resolved: never ``auto``) runs ``batch_loss`` under bfloat16 autocast;
    the backward pass and the step follow the dtypes autocast recorded. Returns (summed loss x batch size, correct,
    rows seen)."""
    total_loss, correct, seen = 0.0, 0, 0
    for idx in _batches(rng, n, batch_size):
        b_idx = torch.as_tensor(idx, device=device)
        with _autocast(precision, device):
            loss, n_correct = batch_loss(b_idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        total_loss += float(loss.detach()) * len(idx)
        correct += n_correct
        seen += len(idx)
    return total_loss, correct, seen


def pretrain(
    net: torch.nn.Module,
    stream: str,
    app: torch.Tensor | None,
    traj: torch.Tensor | None,
    targets: dict[str, np.ndarray],
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
) -> list[dict[str, float]]:
    """Run the first training stage of ``net`` (the ``stream`` network, ``appearance`` or ``geometry``) when it
    is :class:`~stages.learning.models.registry.Pretrainable` and configured to have one; [] otherwise.

    TRAINING split only: ``app`` [N, C, S, S] / ``traj`` [N, L, 68, 2] on ``device`` (the one the stream reads
    is required), ``targets`` its per-sequence arrays. The stage's own AdamW and cosine schedule, ``cfg``'s
    batch size, weight decay and augmentation (its own generator); ``seed`` fixes shuffling and augmentation.
    Returns one row per epoch: stream, epoch, loss (mean over the epoch's batches, per sequence), seconds.
    Leaves ``net`` in train mode."""
    if not isinstance(net, Pretrainable):
        return []
    ref = app if stream == "appearance" else traj
    plan = net.pretraining(targets, len(ref), device)
    if plan is None:
        return []
    shuffle_seed, aug_seed = np.random.SeedSequence([seed, 1]).generate_state(2).tolist()
    gen = torch.Generator().manual_seed(aug_seed)
    rng = np.random.default_rng(shuffle_seed)
    opt = torch.optim.AdamW(plan.parameters, lr=plan.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=plan.epochs)

    def batch_loss(b_idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        if stream == "appearance":
            x, _ = augment_batch(ref[b_idx], None, cfg.augment, gen)
        else:
            _, x = augment_batch(None, ref[b_idx], cfg.augment, gen)
        return plan.loss(x, plan.target[b_idx]), 0

    rows = []
    precision = resolve_precision(cfg.precision, device)
    net.train()
    for epoch in range(1, plan.epochs + 1):
        t0 = time.perf_counter()
        total, _, seen = _train_epoch(opt, rng, len(ref), cfg.batch_size, device, batch_loss, precision=precision)
        sched.step()
        rows.append(
            {
                "stream": stream,
                "epoch": epoch,
                "loss": total / seen if seen else math.nan,
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


def _pretrain_streams(
    model: TwoStream,
    app: torch.Tensor,
    traj: torch.Tensor,
    targets: dict[str, np.ndarray],
    cfg: TrainConfig,
    seed: int,
    device: str,
) -> list[dict[str, float]]:
    """:func:`pretrain` every stream network that has a first stage (appearance first). Models without one draw
    no random numbers here, so their training is unchanged by this step."""
    rows: list[dict[str, float]] = []
    for stream, net in (("appearance", model.appearance), ("geometry", model.geometry)):
        if net is not None:
            rows += pretrain(net, stream, app, traj, targets, cfg, seed, device)
    return rows


def _autocast(precision: str, device: str | torch.device) -> torch.autocast:
    """bfloat16 autocast on ``device`` when the resolved ``precision`` is ``bfloat16``, else a disabled one."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def resolve_precision(precision: str, device: str) -> str:
    """``TrainConfig.precision`` on ``device``: ``float32`` or ``bfloat16`` as given; ``auto`` is ``bfloat16`` where
    the device computes it natively (CPU: oneDNN's bf16 support, i.e. AVX512-BF16 or AMX; CUDA: bf16 support),
    else ``float32``."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "bfloat16" if native else "float32"


@torch.no_grad()
def predict_proba(
    model: TwoStream,
    data: ArrayDataset | tuple,
    batch_size: int = 128,
    device: str = "cpu",
    exact: bool = True,
) -> np.ndarray:
    """Class probabilities [N, K] float64 (softmax of ``model.prediction_key``), eval mode, no gradient.

    ``data``: an :class:`ArrayDataset` or a tuple (appearance [N, C, S, S], trajectory [N, L, 68, 2]).
    ``batch_size`` sequences are copied to ``device`` at a time. With ``exact`` (default) the network then
    runs on one sequence at a time, so a sequence's probabilities depend only on its own inputs and the
    weights: bit-identical whatever the batch size, order or other sequences in the call (BLAS kernels round
    differently for different batch shapes, ~1e-7). ``exact=False`` runs whole batches (faster on a GPU,
    equal to ~1e-6). The model is moved to ``device``; its train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise StageError(f"batch_size must be >= 1; got {batch_size}")
    app_all, traj_all = (data.appearance, data.trajectory) if isinstance(data, ArrayDataset) else data[:2]
    if len(app_all) != len(traj_all):
        raise StageError(f"{len(app_all)} appearance inputs but {len(traj_all)} trajectories")
    step = 1 if exact else batch_size
    was_training = model.training
    model.to(device).eval()
    chunks = [np.zeros((0, int(model.build_args.get("n_classes", 0))), dtype=np.float64)]
    try:
        for start in range(0, len(app_all), batch_size):
            sl = slice(start, start + batch_size)
            app, traj = _tensors((app_all[sl], traj_all[sl]), device)
            for i in range(0, len(app), step):
                inputs = _stream_inputs(model, app[i : i + step], traj[i : i + step])
                logits = model(*inputs)[model.prediction_key]
                chunks.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def ensemble_proba(
    models: Sequence[TwoStream], data: ArrayDataset | tuple, batch_size: int = 128, device: str = "cpu"
) -> np.ndarray:
    """The mean of :func:`predict_proba` over ``models`` (an ensemble, or one model): [N, K] float64."""
    if not models:
        raise StageError("an ensemble needs at least one model")
    return np.mean([predict_proba(m, data, batch_size, device) for m in models], axis=0)


def member_seeds(seed: int, n: int) -> list[int]:
    """Run seeds of an ``n``-network ensemble (``TrainConfig.ensemble``): member k is the run at ``seed + k``,
    so member 0 is the single-network run and an ensemble of n extends the one of n - 1."""
    return [seed + k for k in range(n)]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def save_checkpoint(
    path: str | Path, model: TwoStream, model_cfg: ModelConfig, classes: list[str], extra: dict | None = None
) -> Path:
    """Write weights to ``path`` (safetensors) with the model config, class names, build shapes and
    ``extra`` (JSON-serialisable) in its metadata. Written to a temporary file and renamed, so a crash
    leaves no half-written checkpoint."""
    path = Path(path)
    if len(classes) != model.build_args.get("n_classes", len(classes)):
        raise StageError(f"{len(classes)} class names for a model with {model.build_args['n_classes']} outputs")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": model_cfg.model_dump_json(),
        "classes": json.dumps(list(classes)),
        "build": json.dumps(model.build_args),
        "extra": json.dumps(extra or {}, default=_json_default),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save zip archive; raw pickle protocol >= 2


def load_checkpoint(path: str | Path) -> tuple[TwoStream, ModelConfig, list[str], dict]:
    """Read a :func:`save_checkpoint` file -> (model in eval mode on CPU, config, classes, extra).

    Refuses pickled files (``torch.save`` output) without unpickling them; :class:`StageError` names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(8)
    try:  # reading a safetensors header never unpickles anything, so try it first: a valid header's length
        # (the first 8 bytes) can start with the pickle magic byte 0x80
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for malformed files
        if head.startswith(_PICKLE_MAGICS):
            msg = f"checkpoint {path} is a pickled file; seqfer only loads .safetensors checkpoints"
            raise StageError(msg) from None
        raise StageError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise StageError(f"checkpoint {path} was not written by seqfer (no '{CHECKPOINT_FORMAT}' metadata)")
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise StageError(
            f"checkpoint {path} has format version {metadata.get('version')}; "
            f"this seqfer reads version {CHECKPOINT_VERSION}"
        )
    cfg, classes, build, extra = _checkpoint_metadata(path, metadata)
    try:
        model = build_model(cfg, build["n_classes"], build["in_channels"], build.get("n_steps"))
    except (ValueError, TypeError, RuntimeError) as exc:  # StageError is a ValueError
        raise StageError(f"checkpoint {path}: its model config cannot be built: {exc}") from None
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise StageError(f"checkpoint {path} does not match its model config: {exc}") from None
    model.eval()
    return model, cfg, classes, extra


_MAX_CLASSES, _MAX_CHANNELS, _MAX_STEPS = 10_000, 64, 100_000  # far beyond any real model: a guard, not a limit


def _checkpoint_metadata(path: Path, metadata: dict) -> tuple[ModelConfig, list[str], dict, dict]:
    """(model config, classes, build shapes, extra) from a checkpoint's metadata; :class:`StageError` naming the
    file for a missing key, bad JSON, absurd sizes or class names that do not match the outputs."""
    from pydantic import ValidationError

    missing = [k for k in ("model_config", "classes", "build") if k not in metadata]
    if missing:
        raise StageError(f"checkpoint {path}: metadata lacks {', '.join(missing)}")
    try:
        cfg = ModelConfig.model_validate_json(metadata["model_config"])
        classes = json.loads(metadata["classes"])
        build = json.loads(metadata["build"])
        extra = json.loads(metadata.get("extra") or "{}")
    except (ValueError, ValidationError) as exc:
        raise StageError(f"checkpoint {path}: metadata is not valid ({str(exc).splitlines()[0][:200]})") from None

    def count(name: str, high: int, optional: bool = False) -> bool:
        value = build.get(name) if isinstance(build, dict) else None
        if value is None and optional:
            return True
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high

    if not (
        isinstance(build, dict)
        and count("n_classes", _MAX_CLASSES)
        and count("in_channels", _MAX_CHANNELS)
        and count("n_steps", _MAX_STEPS, optional=True)
    ):
        raise StageError(f"checkpoint {path}: metadata 'build' has missing or absurd sizes: {str(build)[:200]}")
    if not (
        isinstance(classes, list)
        and all(isinstance(c, str) and c for c in classes)
        and len(set(classes)) == len(classes)
    ):
        raise StageError(f"checkpoint {path}: metadata 'classes' must be a list of distinct names")
    if len(classes) != build["n_classes"]:
        raise StageError(f"checkpoint {path}: {len(classes)} class names for a model with {build['n_classes']} outputs")
    if not isinstance(extra, dict):
        raise StageError(f"checkpoint {path}: metadata 'extra' must be a JSON object")
    return cfg, classes, build, extra
