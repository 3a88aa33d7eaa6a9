"""The project's training step against a plain torch loop of the same network, precision and batch, in one process.

    python benchmarks/bench_train.py --config configs/ck48.yaml                  # the configured network (fused)
    python benchmarks/bench_train.py --net fer-small --batch 64 --precision bfloat16
    python benchmarks/bench_train.py --net fer-wide --batch 64 --precision float32 --memory-format contiguous

The project's step is the real one: :func:`stages.learning.training.fit.fit` on synthetic data held as training holds
it (uint8 frames, or float32 where the input is not made of whole grey levels: a face mask, appearance extras), one
epoch of ``--steps`` batches per round: index gather, uint8 -> float, augmentation, forward, joint loss, backward,
AdamW, EMA when configured. The plain loop is what a torch user writes: the same network (``build_model``), AdamW,
``--steps`` ready-made float32 batches, forward + loss + backward + step under the same autocast. Rounds of the two
alternate (the plain round runs inside fit's per-epoch callback, under fit's thread count), so a machine shared with
other work slows both alike; the first round of each is dropped and the median is reported.

GFLOP/s: the forward + backward FLOPs of one batch of the network, counted by ``torch.utils.flop_counter``
(convolutions and matrix products; augmentation and the optimiser are not counted), over the median step time.
``--memory-format contiguous`` turns the networks' channels-last layout off (every Conv2d's weight and input made
contiguous by a global forward pre-hook), to measure what channels-last brings.

``--net``: ``config`` (the config's model), ``fer-small`` (skipnet, 4 blocks of two 3x3 convs at 32-128 channels,
0.48 M parameters, 48 px grey, appearance only) or ``fer-wide`` (the same at 64-512 channels, 4.7 M). The last
column is the time of one FER2013 training epoch (28,709 samples) at the project's pace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from stages.learning.inputs.extras import extra_channels, needs_of  # noqa: E402
from stages.learning.models import ModelConfig, TrainConfig, build_model  # noqa: E402
from stages.learning.models.two_stream import in_channels_for  # noqa: E402
from stages.learning.training.dataset import ArrayDataset  # noqa: E402
from stages.learning.training.fit import fit  # noqa: E402
from stages.learning.training.precision import resolve_precision  # noqa: E402

FER2013_TRAIN = 28_709
N_CLASSES = 7
FER_NETS = {"fer-small": [32, 64, 96, 128], "fer-wide": [64, 128, 256, 512]}


def networks(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, int, int, bool]:
    """(model config, train config, appearance channels, trajectory length, uint8 storage) of ``--net``."""
    cfg = load_config(args.config, args.set)
    model_cfg, train_cfg = cfg.model, cfg.train
    steps = cfg.preprocess.trajectory.length
    color = cfg.preprocess.align.color == "rgb"
    if args.net in FER_NETS:
        model_cfg = ModelConfig.model_validate(
            {
                "streams": "appearance",
                "input": {"appearance": "peak", "size": 48},
                "appearance": {"name": "skipnet", "channels": FER_NETS[args.net], "convs_per_block": 2},
            }
        )
        train_cfg = TrainConfig(batch_size=64)
        steps, color = 1, False
    extras = needs_of(model_cfg).extras
    channels = in_channels_for(model_cfg.input, color) + extra_channels(extras)
    uint8 = model_cfg.input.mask == "none" and not extras
    updates = {"threads": args.threads or train_cfg.threads, "precision": args.precision or train_cfg.precision}
    if args.batch:
        updates["batch_size"] = args.batch
    return model_cfg, train_cfg.model_copy(update=updates), channels, steps, uint8


def synthetic(n: int, channels: int, size: int, steps: int, uint8: bool, seed: int = 0) -> ArrayDataset:
    """``n`` random sequences held as training holds them: uint8 frames (or float32 in [0, 1])."""
    rng = np.random.default_rng(seed)
    app = rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    if not uint8:
        app = app.astype(np.float32) / np.float32(255.0)
    traj = rng.normal(scale=0.1, size=(n, steps, 68, 2)).astype(np.float32)
    return ArrayDataset(app, traj, rng.integers(0, N_CLASSES, size=n).astype(np.int64))


def contiguous_convs() -> None:
    """Every Conv2d's weight and input in the contiguous (NCHW) layout, whatever the network asks for."""

    def hook(module: nn.Module, inputs: tuple) -> tuple | None:
        if not isinstance(module, nn.Conv2d):
            return None
        if not module.weight.is_contiguous():
            module.weight.data = module.weight.data.contiguous()
        return tuple(x.contiguous() if isinstance(x, torch.Tensor) else x for x in inputs)

    nn.modules.module.register_module_forward_pre_hook(hook)


class PlainLoop:
    """A plain torch training loop of the same network: ready float32 batches, AdamW, autocast when bfloat16."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data: ArrayDataset, steps: int) -> None:
        torch.manual_seed(1)
        app, traj = data.appearance, data.trajectory
        self.model = build_model(model_cfg, N_CLASSES, int(app.shape[1]), int(traj.shape[1])).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.bf16 = resolve_precision(cfg.precision, "cpu") == "bfloat16"
        b = cfg.batch_size
        x = torch.as_tensor(app.astype(np.float32) / np.float32(255.0) if app.dtype == np.uint8 else app)
        t, y = torch.as_tensor(traj), torch.as_tensor(data.labels)
        app_on = self.model.appearance is not None
        geo_on = self.model.geometry is not None
        self.batches = [
            (x[i : i + b] if app_on else None, t[i : i + b] if geo_on else None, y[i : i + b])
            for i in range(0, steps * b, b)
        ]

    def loss(self, x: torch.Tensor | None, t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.loss(self.model(x, t), y)

    def round(self) -> float:
        """Seconds of one pass over the batches."""
        t0 = time.perf_counter()
        for x, t, y in self.batches:
            loss = self.loss(x, t, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def flops_per_batch(self) -> int:
        """Forward + backward FLOPs of one batch (torch's flop counter)."""
        from torch.utils.flop_counter import FlopCounterMode

        x, t, y = self.batches[0]
        with FlopCounterMode(display=False) as counter:
            self.loss(x, t, y).backward()
        self.opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


def measure(args: argparse.Namespace) -> dict[str, float | str]:
    """Alternating rounds of the project's epoch and the plain loop; medians without the first round."""
    model_cfg, cfg, channels, steps, uint8 = networks(args)
    if args.storage != "auto":
        uint8 = args.storage == "uint8"
    if args.memory_format == "contiguous":
        contiguous_convs()
    n = args.steps * cfg.batch_size
    data = synthetic(n, channels, model_cfg.input.size, steps, uint8)
    plain = PlainLoop(model_cfg, cfg, data, args.steps)
    project_s: list[float] = []
    plain_s: list[float] = []
    project_cpu: list[float] = []
    plain_cpu: list[float] = []
    mark = [time.process_time()]

    def on_epoch(row: dict) -> None:
        t0 = time.process_time()
        project_s.append(row["seconds"])
        project_cpu.append(t0 - mark[0])  # includes the epoch's few non-step lines (schedule, history row)
        plain_s.append(plain.round())
        mark[0] = time.process_time()
        plain_cpu.append(mark[0] - t0)

    run_cfg = cfg.model_copy(update={"epochs": args.rounds + 1, "patience": args.rounds + 1})
    fit(model_cfg, N_CLASSES, data, None, run_cfg, seed=0, on_epoch=on_epoch)
    flops = plain.flops_per_batch() / cfg.batch_size
    project = n / statistics.median(project_s[1:])
    plain_rate = n / statistics.median(plain_s[1:])
    project_c = n / statistics.median(project_cpu[1:])
    plain_c = n / statistics.median(plain_cpu[1:])
    return {
        "net": args.net if args.net != "config" else f"{model_cfg.appearance.name}/{model_cfg.streams} ({args.config})",
        "params": sum(p.numel() for p in plain.model.parameters()),
        "precision": resolve_precision(cfg.precision, "cpu"),
        "layout": args.memory_format,
        "storage": "uint8" if uint8 else "float32",
        "batch": cfg.batch_size,
        "threads": cfg.threads,
        "project": project,
        "plain": plain_rate,
        "project_cpu": project_c,
        "plain_cpu": plain_c,
        "project_gflops": project * flops / 1e9,
        "plain_gflops": plain_rate * flops / 1e9,
        "fer_epoch_s": FER2013_TRAIN / project,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/ck48.yaml"))
    ap.add_argument("--set", action="append", default=[], help="config override, as seqfer's --set")
    ap.add_argument("--net", choices=["config", *FER_NETS], default="config")
    ap.add_argument("--precision", choices=["float32", "bfloat16", "auto"], default=None, help="default: config's")
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    ap.add_argument("--storage", choices=["auto", "uint8", "float32"], default="auto", help="training data dtype")
    ap.add_argument("--batch", type=int, default=0, help="default: config's (fer nets: 64)")
    ap.add_argument("--threads", type=int, default=0, help="default: config's train.threads")
    ap.add_argument("--steps", type=int, default=10, help="batches per round")
    ap.add_argument("--rounds", type=int, default=7, help="measured rounds of each (one more is dropped)")
    args = ap.parse_args()
    r = measure(args)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# bench_train: load average {load} on {os.cpu_count()} cores; {args.rounds} rounds x {args.steps} steps")
    print(
        "| net | params | precision | layout | data | batch | threads | project img/s | plain img/s | project/plain "
        "| project GFLOP/s | plain GFLOP/s | FER2013 epoch s | project img/CPU-s | plain img/CPU-s | ratio (CPU) |"
    )
    print("| --- | ---: | --- | --- | --- |" + " ---: |" * 11)
    print(
        f"| {r['net']} | {r['params']:,} | {r['precision']} | {r['layout']} | {r['storage']} | {r['batch']} "
        f"| {r['threads']} | {r['project']:.0f} | {r['plain']:.0f} | {r['project'] / r['plain']:.2f} "
        f"| {r['project_gflops']:.1f} | {r['plain_gflops']:.1f} | {r['fer_epoch_s']:.0f} "
        f"| {r['project_cpu']:.0f} | {r['plain_cpu']:.0f} | {r['project_cpu'] / r['plain_cpu']:.2f} |"
    )


if __name__ == "__main__":
    main()
