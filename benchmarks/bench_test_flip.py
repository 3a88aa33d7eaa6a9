"""What a model's test-time mirror (``model.test_flip``) buys: accuracy and the network's cost with and without it,
on the same model inputs; with ``--crops``, what test-time crops would add to it.

    python benchmarks/bench_test_flip.py --model fer2013 --images ../shared/real/FER2013/validation
    python benchmarks/bench_test_flip.py --model fer2013 --images ../shared/real/FER2013/validation --crops

Every image under ``--images/<class>/`` (class folder names through the aliases: ``angry`` = anger ...) is
preprocessed once in this process; the network then scores all of them with the mirror (image and its mirror
averaged) and without it. Prints accuracy over the images with a face and the network's milliseconds per input
(``torch`` threads as set by ``--threads``). Images of a class the model lacks are left out.

``--crops`` also scores each input, mirror included, after
a fixed zoom (0.9, 0.95, 1.05, 1.1), shift (2 px of a 48 px input, each way) or rotation (5 degrees each way), made
as training's augmentation makes them (``stages.learning.augment.warp_crops``), scored by the Predictor as any input,
and prints the accuracy of each alone and of the probabilities averaged with the plain input's over groups of them.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np


def main(args: argparse.Namespace) -> None:
    import torch

    from data_manifests.scan_common import canonical_class, is_image
    from pipeline.predict.predictor import Predictor
    from stages.errors import StageError

    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.model)
    files = sorted(p for p in Path(args.images).rglob("*") if is_image(p.name))
    apps, trajs, labels = [], [], []
    for path in files:
        label = canonical_class(path.parent.name)
        if label not in predictor.classes:
            continue
        try:
            app, traj = predictor.model_inputs(path)
        except StageError:  # no face: not scored either way
            continue
        apps.append(app)
        trajs.append(traj)
        labels.append(label)
    appearance, trajectory, truth = np.concatenate(apps), np.concatenate(trajs), np.array(labels)
    own_flip = [model.test_flip for model in predictor.bundle.models]
    for flip in (True, False):
        for model in predictor.bundle.models:
            model.test_flip = flip
        start = time.perf_counter()
        probs = predictor.probabilities(appearance, trajectory)
        seconds = time.perf_counter() - start
        accuracy = (np.array(predictor.classes)[probs.argmax(axis=1)] == truth).mean()
        print(
            f"test_flip={flip}: accuracy {100 * accuracy:.2f} % of {len(truth)} inputs with a face "
            f"({len(files)} images); network {1000 * seconds / len(truth):.2f} ms an input, {args.threads} thread(s)"
        )
    if args.crops:
        for model, flip in zip(predictor.bundle.models, own_flip, strict=True):
            model.test_flip = flip  # the model as it ships
        crop_accuracies(predictor, appearance, trajectory, truth)


CROPS: dict[str, dict[str, float]] = {
    "zoom 1.1": {"zoom": 1.1},
    "zoom 0.9": {"zoom": 0.9},
    "zoom 1.05": {"zoom": 1.05},
    "zoom 0.95": {"zoom": 0.95},
    "shift +x": {"dx": 1},
    "shift -x": {"dx": -1},
    "shift +y": {"dy": 1},
    "shift -y": {"dy": -1},
    "rotate +5": {"degrees": 5},
    "rotate -5": {"degrees": -5},
}
"""Test-time crops: zoom factor, shift in units of 2 input pixels, rotation in degrees."""
GROUPS = (
    ("zoom 1.05", "zoom 0.95"),
    ("zoom 1.1", "zoom 0.9"),
    ("shift +x", "shift -x", "shift +y", "shift -y"),
    ("rotate +5", "rotate -5"),
    ("zoom 1.05", "zoom 0.95", "shift +x", "shift -x", "shift +y", "shift -y"),
    tuple(CROPS),
)


def crop_accuracies(predictor, appearance: np.ndarray, trajectory: np.ndarray, truth: np.ndarray) -> None:
    """Print the accuracy of each test-time crop alone and of groups of them averaged with the plain input. Every
    input is scored by :meth:`Predictor.probabilities` (the model's own mirror, precision and ensemble); a crop is
    made by :func:`stages.learning.augment.warp_crops`, as training's augmentation makes them; probabilities are
    averaged."""
    import torch

    from stages.learning.augment import affine_theta, warp_crops
    from stages.learning.training.dataset import appearance_float

    classes = np.array(predictor.classes)
    x = appearance_float(torch.from_numpy(appearance))
    flat = x.reshape(len(x), -1, *x.shape[-2:])  # frames as channels: one transform per input
    pixel = 2 / x.shape[-1]  # one input pixel in [-1, 1] units

    def crop(zoom: float = 1.0, dx: float = 0.0, dy: float = 0.0, degrees: float = 0.0) -> np.ndarray:
        n = len(flat)
        theta = affine_theta(
            torch.full((n,), math.radians(degrees)),
            torch.full((n,), zoom),
            torch.tensor([2 * dx * pixel, 2 * dy * pixel]).expand(n, 2),
        )
        return warp_crops(flat, theta).reshape(x.shape).numpy()

    def acc(probs: np.ndarray) -> float:
        return 100 * float((classes[probs.argmax(axis=1)] == truth).mean())

    plain = predictor.probabilities(appearance, trajectory)
    print(f"plain input with its mirror: {acc(plain):.2f} %")
    crops = {name: predictor.probabilities(crop(**args), trajectory) for name, args in CROPS.items()}
    for name, probs in crops.items():
        print(f"  {name} alone: {acc(probs):.2f} %")
    for group in GROUPS:
        print(f"  plain + {', '.join(group)}: {acc(plain + sum(crops[g] for g in group)):.2f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fer2013", help="a model folder, CV run folder or ready model name")
    parser.add_argument("--images", required=True, help="a folder of class folders of images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crops", action="store_true", help="also the accuracy with test-time crops")
    main(parser.parse_args())
