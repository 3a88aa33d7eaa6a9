"""Side-by-side CV of the default CK+48 model and its ablations on real faces, same folds, one run.

    python benchmarks/bench_ck48.py --root ../shared/real/CK+48 [--out runs/bench_ck48] [--config configs/ck48.yaml]

Cells (each an ordinary `seqfer cv` run folder under OUT/<cell>/cv/, sharing one manifest, cache and the labelled
data prepared once, so every cell sees the same 10 subject-independent folds and the same inputs):

- default: the config as it is (two-stream: skipnet + trajnet, fused);
- plain CNN reference: 4 conv blocks without skip connections (plaincnn), appearance alone, each frame a sample;
- appearance only (skipnet) and geometry only (trajnet): each stream alone;
- fused without skips: plaincnn + trajnet, the skip-connection ablation of the default.

Prints a Markdown table (accuracy mean +/- std over folds, mean class accuracy, wall seconds per cell) and writes
it to OUT/table.md. Finished cells resume like any CV run (same data and settings only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.cv.run import run_cv  # noqa: E402
from pipeline.data.labelled import load_labelled_data  # noqa: E402

CELLS: dict[str, list[str]] = {
    "default (skipnet + trajnet, fused)": [],
    "plain CNN reference (plaincnn, appearance, single frames)": [
        "model.appearance.name=plaincnn",
        "model.streams=appearance",
    ],
    "appearance only (skipnet)": ["model.streams=appearance"],
    "geometry only (trajnet)": ["model.streams=geometry"],
    "fused without skips (plaincnn + trajnet)": ["model.appearance.name=plaincnn"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def main(args: argparse.Namespace) -> None:
    base_sets = [f"data.root={args.root}", f"output_dir={args.out}"] + list(args.set or [])
    base = load_config(args.config, base_sets)
    data = load_labelled_data(base)
    rows = []
    for name, sets in CELLS.items():
        cell_sets = base_sets + [
            f"output_dir={Path(args.out) / slug(name)}",
            f"preprocess.cache_dir={base.cache_dir}",
            f"data.manifest={base.manifest_path}",
            *sets,
        ]
        cfg = load_config(args.config, cell_sets)
        print(f"bench_ck48: {name}", file=sys.stderr)
        start = time.perf_counter()
        summary = run_cv(cfg, data)
        rows.append((name, summary, time.perf_counter() - start))
    lines = [
        f"CK+48 at {args.root}: {len(data.labels)} sequences, {len(set(data.subjects))} subjects, "
        f"10-fold subject-independent CV (same folds for every row)",
        "",
        "| model | accuracy % (mean +/- std) | mean class acc. % | wall s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, s, sec in rows:
        lines.append(
            f"| {name} | {100 * s['accuracy_mean']:.2f} +/- {100 * s['accuracy_std']:.2f} "
            f"| {100 * s['mean_class_accuracy']:.2f} | {sec:.0f} |"
        )
    table = "\n".join(lines)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the CK+48 class-folder root")
    parser.add_argument("--config", default="configs/ck48.yaml")
    parser.add_argument("--out", default="runs/bench_ck48")
    parser.add_argument("--set", action="append", help="extra dotted.key=value overrides for every cell")
    main(parser.parse_args())
