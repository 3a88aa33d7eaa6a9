"""Does a model label a face the same at any resolution? Photos at their own size against the same photos shrunk
until their faces are FER2013-sized, with ``align.antialias`` off and on.

    python benchmarks/bench_antialias.py [--model fer2013] [--faces ../shared/faces] [--half all|first|last]

A model trained on small faces (FER2013's 48 px images, CK+48's crops) sees them enlarged to its crop. A large face
(a photo, a video frame) is shrunk to the crop instead, and without ``antialias`` by the bilinear warp alone, which
samples single source pixels (aliasing). No expression labels are needed to see what that costs: each photo of
``--faces`` (images with 300-W ``.pts`` files, used only for the face's size) is also shrunk by area averaging until
its outer-eye distance is :data:`SMALL_EYES` pixels, as in FER2013's images, and predicted through the small-frame
path. The table gives, over the photos with a face in all three runs, how often the full-size photo's label is the
shrunk photo's, and the mean total variation distance between their probabilities, for antialias off and on. Both
numbers are about agreement, not accuracy: the shrunk photo is not ground truth, only what the model knows best.

``--half first|last`` takes the first or last 100 photos by name (the project tunes nothing on the last 100).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.predict.predictor import Predictor  # noqa: E402
from stages.face_geometry import eye_distance, read_pts  # noqa: E402

SMALL_EYES = 24.0
"""Outer-eye distance, pixels, of the shrunk photos: FER2013's, rounded (dlib's points on 400 PublicTest images:
median 24.6 px, 10-90 % 18.7-30.8; CK+48's crops: 0.51 of the 48 px side, 24.5 px)."""


def shrink(photo: Path, folder: Path) -> Path | None:
    """The photo shrunk (area averaging) so its face's outer-eye distance is SMALL_EYES, written under ``folder``;
    None when it is already that small."""
    image = cv2.imread(str(photo))
    scale = SMALL_EYES / eye_distance(read_pts(photo.with_suffix(".pts")))
    if image is None or scale >= 1.0:
        return None
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    out = folder / f"{photo.stem}.png"
    cv2.imwrite(str(out), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return out


def probabilities(model: str, paths: list[Path], antialias: bool) -> list[np.ndarray | None]:
    """Each path's class probabilities (None without a face), predicted with ``align.antialias`` as given."""
    with warnings.catch_warnings():  # "prediction preprocessing differs from training": that is the point
        warnings.simplefilter("ignore")
        predictor = Predictor.load(model, [f"preprocess.align.antialias={str(antialias).lower()}"])
    results = predictor.predict_batch([str(p) for p in paths])
    return [None if not r.probabilities else np.array([r.probabilities[c] for c in predictor.classes]) for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fer2013", help="model folder or ready model name (default fer2013)")
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces", help="photos with .pts files")
    ap.add_argument("--half", choices=["all", "first", "last"], default="all")
    args = ap.parse_args()
    photos = sorted(p for p in args.faces.glob("*.jpg") if p.with_suffix(".pts").is_file())
    photos = {"all": photos, "first": photos[:100], "last": photos[100:]}[args.half]
    with tempfile.TemporaryDirectory() as scratch:
        pairs = [(p, shrink(p, Path(scratch))) for p in photos]
        pairs = [(p, s) for p, s in pairs if s is not None]
        small = probabilities(args.model, [s for _, s in pairs], antialias=False)  # enlarged: antialias is moot
        full = {aa: probabilities(args.model, [p for p, _ in pairs], aa) for aa in (False, True)}
    both = [i for i in range(len(pairs)) if small[i] is not None and all(full[aa][i] is not None for aa in full)]
    ref = np.array([small[i] for i in both])
    print(f"{args.model} on {len(photos)} photos of {args.faces} ({args.half}): {len(both)} with a face in all runs\n")
    print("| full-size photo, `align.antialias` | label = the shrunk photo's | total variation: mean / median |")
    print("| --- | ---: | ---: |")
    for aa in (False, True):
        probs = np.array([full[aa][i] for i in both])
        agree = float((probs.argmax(1) == ref.argmax(1)).mean()) * 100
        tv = 0.5 * np.abs(probs - ref).sum(1)
        print(f"| {'on' if aa else 'off'} | {agree:.1f} % | {tv.mean():.3f} / {np.median(tv):.3f} |")


if __name__ == "__main__":
    main()
