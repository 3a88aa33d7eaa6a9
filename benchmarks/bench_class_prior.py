"""What a model's training class prior costs it on data with other class shares: the accuracy of ``seqfer evaluate``'s
predictions after dividing each probability by the training share of its class to the power ``tau``.

    seqfer evaluate fer2013 ../shared/real/FER2013 --format fer2013 --split val -o /tmp/prior/val
    seqfer evaluate fer2013 ../shared/real/CK+48 --format imagefolder \\
        --pattern '^(?P<subject>S\\d+)_(?P<sequence>\\d+)_(?P<frame>\\d+)$' -o /tmp/prior/ck48
    python benchmarks/bench_class_prior.py --model fer2013 /tmp/prior/val /tmp/prior/ck48

A classifier trained on data whose classes come in shares ``prior`` learns ``p(c | x)`` proportional to
``p(x | c) * prior_c``. On data where the classes come equally often, ``p(c | x) / prior_c`` (renormalised) is the
Bayes answer (``tau = 1``); ``0 < tau < 1`` corrects part of the way. The shares come from the model folder's
``model.json`` (``data.class_counts``: the images it was trained and validated on). Each evaluate folder's
``predictions.csv`` gives the labels and the probabilities (``p_<class>``) of its scored rows; accuracy and mean
class accuracy are over those rows, all the model's classes competing, as ``metrics.json``'s ``accuracy``.
Nothing is predicted again: this reads what ``evaluate`` wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.model_folder.format import resolve_model_path  # noqa: E402


def training_shares(model: str) -> dict[str, float]:
    """Class -> share of the model's training data (``model.json``'s ``data.class_counts``)."""
    _kind, folder = resolve_model_path(model)
    counts = json.loads((folder / "model.json").read_text())["data"]["class_counts"]
    total = sum(counts.values())
    return {c: n / total for c, n in counts.items()}


def scores(frame: pd.DataFrame, shares: dict[str, float], tau: float) -> tuple[float, float]:
    """(accuracy, mean class accuracy) of the rows' probabilities divided by ``shares ** tau``."""
    classes = list(shares)
    probs = frame[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
    adjusted = probs / np.power([shares[c] for c in classes], tau)
    pred = np.asarray(classes)[adjusted.argmax(axis=1)]
    labels = frame["label"].to_numpy()
    per_class = [float(np.mean(pred[labels == c] == c)) for c in sorted(set(labels))]
    return float(np.mean(pred == labels)), float(np.mean(per_class))


def main(args: argparse.Namespace) -> None:
    shares = training_shares(args.model)
    print("training shares: " + ", ".join(f"{c} {s:.3f}" for c, s in shares.items()))
    frames = {}
    for folder in args.evaluations:
        table = pd.read_csv(Path(folder) / "predictions.csv")
        frames[Path(folder).name] = table[table["status"] == "ok"]
    print("\n| tau | " + " | ".join(f"{name} ({len(f)}): accuracy / mean class" for name, f in frames.items()) + " |")
    print("| ---: |" + " ---: |" * len(frames))
    for tau in args.tau:
        cells = [scores(f, shares, tau) for f in frames.values()]
        print(f"| {tau:g} | " + " | ".join(f"{100 * a:.2f} / {100 * m:.2f} %" for a, m in cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluations", nargs="+", help="output folders of seqfer evaluate (their predictions.csv)")
    parser.add_argument("--model", default="fer2013", help="the model folder or ready model that was evaluated")
    parser.add_argument("--tau", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    main(parser.parse_args())
