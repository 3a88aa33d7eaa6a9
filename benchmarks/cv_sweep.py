"""Quick CV of one setting: the folds of `seqfer cv` (its own train_fold: same splits, seeds and ensemble),
trained two at a time in worker processes, with no run folder. For exploring settings on your own data before a
real `seqfer cv`.

    python benchmarks/cv_sweep.py configs/ck48.yaml data.root=../shared/real/CK+48 model.streams=geometry ...

Prints one line: accuracy mean +/- std over folds, mean class accuracy (pooled), with ``train.ensemble`` = n the
mean accuracy of its networks alone and of the ensembles of its first 1, 2, ..., n networks (member k extends the
ensemble of k), the best epoch of each fold (member 0's) and the wall time; appends it to --log (default
runs/cv_sweep.txt). Its default-config figure equals `seqfer cv`'s (CK+48 half, 2 networks: 96.41 both), since
prediction differs only in batching (~1e-7 in probabilities).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Config, load_config  # noqa: E402
from pipeline.cv.folds import train_fold  # noqa: E402
from pipeline.cv.reports import accuracy, mean_class_accuracy  # noqa: E402
from pipeline.data.labelled import LabelledData, load_labelled_data  # noqa: E402

_CFG: Config | None = None
_DATA: LabelledData | None = None


def _run_fold(fold: int) -> dict:
    """One fold by :func:`pipeline.cv.folds.train_fold` (as `seqfer cv` runs it) in a throw-away folder."""
    import torch

    torch.set_num_threads(1)
    assert _CFG is not None and _DATA is not None
    model_cfg, train_cfg = _CFG.model.model_dump(mode="json"), _CFG.train.model_dump(mode="json")
    with tempfile.TemporaryDirectory(prefix="cv_sweep_") as tmp:
        return train_fold(fold, _DATA, model_cfg, train_cfg, _CFG.train.val_fraction, _CFG.seed, "cpu", tmp, "sweep")


def _labels(result: dict, row_of: dict[str, int]) -> np.ndarray:
    """True labels of a fold result's test sequences, in its ``test_ids`` order (``row_of``: id -> data row)."""
    assert _DATA is not None
    return _DATA.labels[[row_of[sid] for sid in result["test_ids"]]]


def main(args: argparse.Namespace) -> None:
    global _CFG, _DATA
    _CFG = load_config(args.config, args.overrides)
    _DATA = load_labelled_data(_CFG)
    import ray

    if ray.is_initialized():  # the workers below are forked: no Ray inside them
        ray.shutdown()
    start = time.perf_counter()
    with get_context("fork").Pool(args.processes) as pool:
        results = pool.map(_run_fold, sorted(set(_DATA.folds.tolist())))
    row_of = {sid: i for i, sid in enumerate(_DATA.sequence_ids.tolist())}
    labels = [_labels(r, row_of) for r in results]
    y = np.concatenate(labels)
    yhat = np.concatenate([np.argmax(r["proba"], axis=1) for r in results])
    mca = mean_class_accuracy(y, yhat)
    accs = [r["accuracy"] for r in results]
    members = ""
    if _CFG.train.ensemble > 1:  # member k extends the ensemble of k: every smaller ensemble comes for free
        single = [m["accuracy"] for r in results for m in r["members"]]
        prefix = []
        for n in range(1, _CFG.train.ensemble + 1):
            p = [np.mean([m["proba"] for m in r["members"][:n]], axis=0) for r in results]
            prefix.append(np.mean([accuracy(q, y_r) for q, y_r in zip(p, labels, strict=True)]))
        members = (
            f"  (its {_CFG.train.ensemble} networks alone: {100 * np.mean(single):.2f}; ensembles of the first 1..n: "
            f"{' / '.join(f'{100 * a:.2f}' for a in prefix)})"
        )
    line = (
        f"acc {100 * np.mean(accs):.2f} +/- {100 * np.std(accs):.2f}  mean class acc {100 * mca:.2f}{members}  "
        f"best epochs {[r['best_epoch'] for r in results]}  {time.perf_counter() - start:.0f} s  "
        f"{' '.join(args.overrides)}"
    )
    print(line)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, as --set")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--log", default="runs/cv_sweep.txt")
    main(parser.parse_args())
