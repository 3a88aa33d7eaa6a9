"""What a model's test-time mirror (``model.test_flip``) buys: accuracy and the network's cost with and without it,
on the same model inputs.

    python benchmarks/bench_test_flip.py --model fer2013 --images ../shared/real/FER2013/validation

Every image under ``--images/<class>/`` (class folder names through the aliases: ``angry`` = anger ...) is
preprocessed once in this process; the network then scores all of them with the mirror (image and its mirror
averaged) and without it. Prints accuracy over the images with a face and the network's milliseconds per input
(``torch`` threads as set by ``--threads``). Images of a class the model lacks are left out.
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fer2013", help="a model folder, CV run folder or ready model name")
    parser.add_argument("--images", required=True, help="a folder of class folders of images")
    parser.add_argument("--threads", type=int, default=2)
    main(parser.parse_args())
