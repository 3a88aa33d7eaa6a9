"""Train on some subjects, predict the others' sequences as frame folders: what a user who trains on their own
data and labels new recordings gets (the acceptance of issue 9: train on one half of CK+48, label the other half).

    python benchmarks/bench_transfer.py --root ../shared/real/CK+48 [--out runs/bench_transfer]
        [--config configs/ck48.yaml] [--seeds 0 1 2] [--set train.augment.contrast=0.3 ...]

The class-folder set at ROOT is scanned once (the config's subject-independent folds); the subjects of folds
0-4 form a class-folder training set and the sequences of folds 5-9 become one frame folder each (symlinks into
ROOT, nothing copied). For each seed, ``seqfer train`` on the first part and ``seqfer predict`` on the folders
of the second run as subprocesses, exactly as a user would; the script prints accuracy and mean class accuracy
per seed and their mean. No subject is in both parts (checked).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.cv.reports import mean_class_accuracy  # noqa: E402
from pipeline.data.manifest import prepare_manifest  # noqa: E402


def split_sets(manifest: pd.DataFrame, out: Path) -> tuple[Path, pd.DataFrame]:
    """Symlink folds 0-4 as a class-folder training root and each sequence of folds 5-9 as a frame folder.
    Returns (training root, [input, label] of the frame folders)."""
    train_part, test_part = manifest[manifest["fold"] < 5], manifest[manifest["fold"] >= 5]
    shared = set(train_part["subject"]) & set(test_part["subject"])
    if shared:
        raise SystemExit(f"subjects in both parts: {sorted(shared)[:5]}")
    train_root, folders = out / "train_part", out / "test_folders"
    for row in train_part.itertuples():
        for frame in row.frame_paths:
            _link(Path(frame), train_root / row.label / Path(frame).name)
    rows = []
    for row in test_part.itertuples():
        for frame in row.frame_paths:
            _link(Path(frame), folders / row.sequence_id / Path(frame).name)
        rows.append({"input": str(folders / row.sequence_id), "label": row.label})
    return train_root, pd.DataFrame(rows)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.is_symlink():
        os.symlink(src.resolve(), dst)


def seqfer(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"seqfer {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main(args: argparse.Namespace) -> None:
    out = args.out.resolve()
    cfg = load_config(args.config, [f"data.root={args.root}", f"output_dir={out / 'scan'}"])
    manifest = prepare_manifest(cfg, quiet=True)[0]
    train_root, truth = split_sets(manifest, out)
    n_train = manifest[manifest["fold"] < 5]
    print(
        f"train: {n_train['subject'].nunique()} subjects, {len(n_train)} sequences; "
        f"predict: {manifest['subject'].nunique() - n_train['subject'].nunique()} subjects, {len(truth)} folders"
    )
    results = []
    for seed in args.seeds:
        run = out / f"seed_{seed}"
        sets = [f"data.root={train_root}", f"output_dir={run}", f"seed={seed}", *args.overrides]
        seqfer("train", str(args.config), *[a for kv in sets for a in ("--set", kv)])
        seqfer("predict", str(run / "model"), *truth["input"], "-o", str(run / "predictions.csv"))
        pred = pd.read_csv(run / "predictions.csv").merge(truth, on="input", suffixes=("", "_true"))
        acc = float((pred["label"] == pred["label_true"]).mean())
        mca = mean_class_accuracy(pred["label_true"].to_numpy(str), pred["label"].fillna("").to_numpy(str))
        results.append((acc, mca))
        print(f"seed {seed}: accuracy {100 * acc:.2f} %, mean class accuracy {100 * mca:.2f} %, {len(pred)} folders")
    accs, mcas = np.array(results).T
    print(
        f"mean over seeds {args.seeds}: accuracy {100 * accs.mean():.2f} +/- {100 * accs.std():.2f} %, "
        f"mean class accuracy {100 * mcas.mean():.2f} %  (overrides: {' '.join(args.overrides) or 'none'})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="a class-folder set such as CK+48")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_transfer"))
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "ck48.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (dotted=value)")
    main(parser.parse_args())
