"""Forward+backward time per training batch of every registered appearance network (CPU, one thread).

    python3 benchmarks/model_speed.py [--size 64] [--channels 3] [--batch 32] [--repeats 5] [--models a,b]

Prints, per network: parameters, multiply-accumulates per sequence (appearance stream only), and the median
seconds of one training step (forward, joint loss, backward, AdamW step) on a random batch, plus the implied
seconds of one fold (``--sequences`` training sequences x ``--epochs`` epochs, training steps only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.compare.cost import count_macs, count_parameters  # noqa: E402
from stages.learning.inputs.extras import extra_channels, needs_of  # noqa: E402
from stages.learning.models import ModelConfig, build_model, list_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3, help="appearance channels (frames x colours)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sequences", type=int, default=290)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--models", default=",".join(list_models("appearance")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| model | params | MMAC/seq | s/batch of {args.batch} | s/fold ({args.sequences} seq x {args.epochs} ep) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        cfg = ModelConfig.model_validate(
            {"streams": "appearance", "appearance": {"name": name}, "input": {"size": args.size}}
        )
        c = args.channels + extra_channels(needs_of(cfg).extras)
        torch.manual_seed(0)
        model = build_model(cfg, 7, c, 16)
        x = torch.rand(args.batch, c, args.size, args.size)
        if c > args.channels:  # region masks: boxes that cover part of the face
            x[:, args.channels :] = 0
            x[:, args.channels :, 20:40, 10:30] = 1
        y = torch.randint(0, 7, (args.batch,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        times = []
        model.train()
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            loss = model.loss(model(x, None), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        step = float(np.median(times[1:]))
        macs = count_macs(model.eval(), x[:1], None)
        fold = step * int(np.ceil(args.sequences / args.batch)) * args.epochs
        print(f"| {name} | {count_parameters(model):,} | {macs / 1e6:.1f} | {step:.3f} | {fold:.0f} |", flush=True)


if __name__ == "__main__":
    main()
