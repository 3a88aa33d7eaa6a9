"""Where one prediction worker's time goes on single images: preprocessing, the network, and the whole call.

    python benchmarks/bench_predict_parts.py [--model fer2013] [--images ../shared/real/FER2013/validation] \
        [--limit 608] [--chunk 32] [--threads 1]

In this process, one thread by default (as one Ray worker of `seqfer predict` / `evaluate` runs): a
:class:`~pipeline.predict.predictor.Predictor` of ``--model``, the first ``--limit`` images under ``--images``
(sorted), after one untimed chunk. Prints milliseconds per input of

- preprocessing: ``Predictor.processor.process`` of every image (decode, landmarks, align; no cache);
- the network: ``Predictor.probabilities`` on the model inputs of those with a face, ``--chunk`` at a time (the
  precision the Predictor chose, the mirror pass included where the model has ``test_flip``);
- the whole call: ``Predictor.predict_batch`` on chunks of ``--chunk`` images;

and, under torch's profiler, the share of the network's CPU time spent in convolutions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fer2013", help="a model folder or a ready model's name")
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "real" / "FER2013" / "validation")
    ap.add_argument("--limit", type=int, default=608)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from pipeline.predict.predictor import Predictor

    torch.set_num_threads(args.threads)
    files = sorted(str(p) for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".png"))[: args.limit]
    if not files:
        sys.exit(f"error: no .jpg or .png images under {args.images}")
    predictor = Predictor.load(args.model)
    predictor.predict_batch(files[: args.chunk])  # warm-up: numba, oneDNN kernels
    n = len(files)

    start = time.perf_counter()
    outcomes = [predictor.processor.process(predictor._as_input(f).source) for f in files]
    pre = time.perf_counter() - start
    records = [o.record for o in outcomes if o.record is not None]
    app, traj = predictor._inputs(records)

    def network() -> None:
        for i in range(0, len(records), args.chunk):
            predictor.probabilities(app[i : i + args.chunk], traj[i : i + args.chunk])

    start = time.perf_counter()
    network()
    net = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, n, args.chunk):
        predictor.predict_batch(files[i : i + args.chunk])
    whole = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        network()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)

    print(
        f"\n{args.model}: {n} images ({len(records)} with a face), {args.threads} thread(s), precision "
        f"{predictor.precision}, chunks of {args.chunk}"
    )
    print(
        f"preprocessing {1e3 * pre / n:.2f} ms, network {1e3 * net / max(1, len(records)):.2f} ms, "
        f"whole predict_batch {1e3 * whole / n:.2f} ms per input; convolutions {100 * conv / total:.0f} % of the "
        "network's CPU time (torch profiler)"
    )


if __name__ == "__main__":
    main()
