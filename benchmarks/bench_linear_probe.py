"""A frozen appearance network as CV's feature extractor: how far a linear classifier on its features gets.

    python benchmarks/bench_linear_probe.py --root ../shared/real/CK+48 [--config configs/ck48.yaml] \
        [--model fer2013] [--mask face|none] [--out /tmp/linear_probe]

Why: 10-fold CV of ``configs/ck48.yaml`` fine-tunes the ready model's 2.7 M-parameter CNN in every fold (two
networks a fold, up to 40 epochs), which is most of its time. With the CNN frozen, its features could be computed
once per image and each fold would train only a classifier: seconds instead of minutes. This measures what that
would cost in accuracy, on the config's own folds and model inputs (preprocessed into ``--out``).

Features: the appearance network of ``--model`` (a model folder or a ready model's name), in eval mode and
bfloat16 autocast where the CPU computes it natively: every block's skip feature and the last block's pooled
feature (the classifier's input), averaged over each image and its mirror and over a sequence's frames. Geometry:
the config's trajectory, flattened. Classifier: sklearn's standardised, class-balanced logistic regression at
several ``C``, trained on the other nine folds, the test fold scored once. Prints the accuracy of appearance,
geometry and both, per ``C``, and the seconds of feature extraction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.labelled import load_labelled_data  # noqa: E402
from pipeline.model_folder.load import load_model_bundle  # noqa: E402


def frozen_features(model: str, appearance: np.ndarray) -> np.ndarray:
    """[N, K, S, S] inputs (uint8 grey levels or float in [0, 1]) -> [N, D] features, mirror- and frame-averaged."""
    import torch

    from stages.learning.training.precision import autocast, inference_precision

    bundle = load_model_bundle(model)
    net = bundle.models[0].appearance.eval()
    scale = 255.0 if appearance.dtype == np.uint8 else 1.0
    x = torch.from_numpy(appearance.astype(np.float32) / scale)
    n, k = x.shape[:2]
    frames = x.reshape(n * k, 1, *x.shape[2:])
    precision = inference_precision(bundle.trained_precision, "cpu")

    def features(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(precision, "cpu"):
            skips, last = net.features(batch)
        return torch.cat([*skips, last], dim=1).float()

    both = (features(frames) + features(frames.flip(-1))) / 2
    return both.reshape(n, k, -1).mean(dim=1).numpy()


def cv_accuracy(x: np.ndarray, labels: np.ndarray, folds: np.ndarray, c: float) -> float:
    """Accuracy % of a logistic regression trained on the other folds and scored on each fold once."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.empty_like(labels)
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))
        clf.fit(x[train], labels[train])
        pred[test] = clf.predict(x[test])
    return 100.0 * float((pred == labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the dataset (CK+48's class folders)")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "ck48.yaml")
    ap.add_argument("--model", default="fer2013", help="a model folder or a ready model's name")
    ap.add_argument("--mask", choices=("face", "none"), default=None, help="model.input.mask (default: the config's)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/linear_probe"), help="output_dir for the preprocessing")
    args = ap.parse_args()

    overrides = [f"data.root={args.root}", f"output_dir={args.out}"]
    if args.mask is not None:
        overrides.append(f"model.input.mask={args.mask}")
    data = load_labelled_data(load_config(args.config, overrides), refuse_split="cv")
    start = time.perf_counter()
    appearance = frozen_features(args.model, data.appearance)
    seconds = time.perf_counter() - start
    geometry = data.trajectory.reshape(len(data.trajectory), -1)
    print(
        f"\n{len(data.labels)} sequences of {len(set(data.subjects))} subjects, {len(np.unique(data.folds))} folds; "
        f"features {appearance.shape[1]} per sequence in {seconds:.1f} s"
    )
    print("\n| C | appearance (frozen) | geometry | both |")
    print("| ---: | ---: | ---: | ---: |")
    for c in (0.01, 0.1, 1.0):
        inputs = (appearance, geometry, np.hstack([appearance, geometry]))
        row = [cv_accuracy(x, data.labels, data.folds, c) for x in inputs]
        print(f"| {c} | " + " | ".join(f"{a:.2f} %" for a in row) + " |")


if __name__ == "__main__":
    main()
